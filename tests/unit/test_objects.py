import json

from cloudfiles import CloudFiles

from petavox.tasks.core import objects


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


def test_listing_by_the_start_of_a_name(tmp_path):
    url = f"file://{tmp_path}/store"
    for key in (
        "mesh/12:0:0-64_0-64_0-64",
        "mesh/12:0",
        "mesh/123:0:0-64_0-64_0-64",
        "mesh/2:0:0-64_0-64_0-64",
        "mesh/sub/12:0:x",
    ):
        objects.put(url, key, b"x")
    CloudFiles(url).put("mesh/125:0:zipped", b"y", compress="gzip")  # stored as ….gz
    assert set(objects.list_keys(url, "mesh/12")) == {
        "mesh/12:0",
        "mesh/12:0:0-64_0-64_0-64",
        "mesh/123:0:0-64_0-64_0-64",
        "mesh/125:0:zipped",
    }
    assert sorted(objects.list_keys(url, "mesh/2:")) == ["mesh/2:0:0-64_0-64_0-64"]
    assert list(objects.list_keys(url, "none/12")) == []
