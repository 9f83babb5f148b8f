import pytest

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Vec3
from petavox.workflows.sizing import TARGET_VOXELS, auto_task_shape, check_multiple


def test_grows_to_the_target_in_multiples_of_the_step():
    step = Vec3(512, 512, 64)
    shape = auto_task_shape(step, Vec3(10**5, 10**5, 10**5), 1)
    assert shape % step == Vec3(0, 0, 0)
    assert TARGET_VOXELS // 2 < shape.prod() <= TARGET_VOXELS
    assert shape.z > step.z  # z first: xy tiles stay those of the pyramid


def test_never_larger_than_needed_for_a_small_volume():
    assert auto_task_shape(Vec3(64, 64, 64), Vec3(100, 100, 30), 1) == Vec3(128, 128, 64)


def test_wide_dtypes_get_smaller_tasks():
    big = Vec3(10**5, 10**5, 10**5)
    assert (
        auto_task_shape(Vec3(64, 64, 64), big, 8).prod()
        < auto_task_shape(Vec3(64, 64, 64), big, 1).prod()
    )


def test_a_step_above_the_target_is_kept():
    assert auto_task_shape(Vec3(4096, 4096, 64), Vec3(10**5, 10**5, 10**5), 1) == Vec3(
        4096, 4096, 64
    )


def test_check_multiple_names_the_parameter():
    with pytest.raises(InputError, match=r"chunk_shape .* multiple of storage_chunk"):
        check_multiple("chunk_shape", Vec3(100, 64, 64), Vec3(64, 64, 64), "storage_chunk")
