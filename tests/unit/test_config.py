import pytest

from petavox.workflows.config import ConfigError, load_config, parse_config
from petavox.workflows.params import parse_memory

GOOD = {
    "output": "file:///tmp/run",
    "stages": [
        {"stage": "ingest", "input": "stack.npy", "resolution": [8, 8, 40]},
        {"stage": "downsample", "input": "raw", "mips": 2, "resources": {"memory": "2GiB"}},
    ],
    "ray": {"workers": 2},
    "storage": {"s3_endpoint": "http://127.0.0.1:9000"},
}


def with_stage(**changes):
    stage = {**GOOD["stages"][0], **changes}
    return {**GOOD, "stages": [stage]}


def test_a_valid_config_parses_with_defaults():
    config = parse_config(GOOD)
    ingest, down = config.stages
    assert ingest.axes == "zyx" and ingest.output == "raw"
    assert down.resources.memory == 2 * 1024**3
    assert config.ray.workers == 2 and config.ray.address == "local"
    assert config.storage.context().s3_endpoint == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (with_stage(bogus=1), "stages[0].bogus: unknown key; allowed keys: axes"),
        ({**GOOD, "ray": {"wrokers": 2}}, "ray.wrokers: unknown key; allowed keys: address"),
        (
            {**GOOD, "extra": 1},
            "extra: unknown key; allowed keys: output, overwrite, prices, ray, stages, storage",
        ),
        (with_stage(resolution=[8, 8, 0]), "stages[0].resolution[2]: Input should be greater"),
        (with_stage(axes="xxz"), "stages[0].axes: Value error, 'xxz' is not an order"),
        (with_stage(storage_chunk=[64, 64]), "stages[0].storage_chunk"),
        ({**GOOD, "stages": [{"stage": "segmentz"}]}, "unknown stage; stages are ingest"),
        ({**GOOD, "stages": [{"input": "a"}]}, "missing 'stage:'"),
        ({**GOOD, "stages": []}, "stages: List should have at least 1 item"),
        ({**GOOD, "output": "ftp://host/x"}, "output: Value error, unsupported storage URL"),
        (with_stage(layer_type="mesh"), "stages[0].layer_type"),
        ({**GOOD, "ray": {"workers": 0}}, "ray.workers: Input should be greater than or equal"),
        (
            {**GOOD, "stages": [{"stage": "mesh", "format": "draco"}]},
            "stages[0].format: Input should be 'legacy' or 'sharded'",
        ),
        (
            {**GOOD, "stages": [{"stage": "mesh", "vertex_quantization_bits": 12}]},
            "stages[0].vertex_quantization_bits: Input should be 10 or 16",
        ),
    ],
)
def test_invalid_configs_name_the_key_and_what_is_allowed(data, fragment):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert fragment in str(err.value)


def test_every_problem_is_reported_at_once():
    data = {**with_stage(bogus=1, resolution=[0, 8, 8]), "ray": {"wrokers": 1}}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    text = str(err.value)
    assert "bogus" in text and "resolution" in text and "wrokers" in text


def test_memory_sizes():
    assert parse_memory("512MiB") == 512 * 1024**2
    assert parse_memory("1.5G") == int(1.5 * 1024**3)
    assert parse_memory(1000) == 1000
    with pytest.raises(ValueError, match="not a memory size"):
        parse_memory("lots")


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(top)


def test_resources_are_not_part_of_the_hashed_spec():
    a = parse_config(GOOD).stages[1]
    b = parse_config(
        {**GOOD, "stages": [GOOD["stages"][0], {**GOOD["stages"][1], "resources": {"num_cpus": 4}}]}
    ).stages[1]
    assert a.resources != b.resources
    assert a.hashed_fields() == b.hashed_fields()
    c = parse_config(
        {**GOOD, "stages": [GOOD["stages"][0], {**GOOD["stages"][1], "mips": 3}]}
    ).stages[1]
    assert c.hashed_fields() != a.hashed_fields()


def test_dumped_config_loads_back_the_same(tmp_path):
    from petavox.workflows.config import dump_config

    config = parse_config(GOOD)
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config
