import json

from cloudfiles import CloudFiles

from petavox.tasks import objects


def test_local_objects_roundtrip_and_listing(tmp_path):
    url = f"file://{tmp_path}/store"
    assert objects.get(url, "a/b.json") is None
    objects.put_json(url, "a/b.json", {"x": 1})
    objects.put_json(url, "a/c.json", [1, 2])
    assert json.loads(objects.get(url, "a/b.json")) == {"x": 1}
    assert sorted(objects.list_keys(url, "a/")) == ["a/b.json", "a/c.json"]
    assert list(objects.list_keys(url, "missing/")) == []
    (tmp_path / "store" / "a" / ".tmp-half").write_text("{")  # an interrupted write
    assert sorted(objects.list_keys(url, "a/")) == ["a/b.json", "a/c.json"]


def test_cloudfiles_reads_ours_and_we_read_cloudfiles(tmp_path):
    url = f"file://{tmp_path}/store"
    objects.put_json(url, "info", {"type": "image"})
    assert CloudFiles(url).get_json("info") == {"type": "image"}
    CloudFiles(url).put("plain", b"abc", compress=None)
    CloudFiles(url).put("zipped", b"def", compress="gzip")
    assert objects.get(url, "plain") == b"abc"
    assert objects.get(url, "zipped") == b"def"
