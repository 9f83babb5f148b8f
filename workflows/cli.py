def main() -> None:
    print("petavox")
