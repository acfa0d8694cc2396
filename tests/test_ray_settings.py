"""The `ray:` settings section and --workers as a count or a range: checked in one line, no Ray needed."""

from __future__ import annotations

import pytest

from video2dream.errors import SettingError
from video2dream.settings import resolve, worker_range


def test_workers_a_count_or_a_range() -> None:
    assert worker_range(3) == (3, 3) and worker_range("2-8") == (2, 8) and worker_range(" 2 - 8 ") == (2, 8)
    assert worker_range("x") is None and worker_range(True) is None
    s = resolve(overrides={"backend": "ray", "workers": "2-8", "ray": {"caption_gpus": 0.5, "cpus": 2}})
    assert (s.workers, s.ray.caption_gpus, s.ray.paint_gpus, s.ray.cpus) == ("2-8", 0.5, 1.0, 2)


@pytest.mark.parametrize(("overrides", "words"), [
    ({"workers": "2-8"}, "autoscaling pool of --backend ray"),
    ({"backend": "ray", "workers": "8-2"}, "a range such as 2-8"),
    ({"backend": "ray", "workers": "0-2"}, "a range such as 2-8"),
    ({"backend": "ray", "workers": "many"}, "a range such as 2-8"),
    ({"ray": {"paint_gpus": -1}}, "GPUs per painting actor"),
    ({"ray": {"cpus": 0}}, "CPUs per actor"),
    ({"ray": {"gpus": 1}}, "unknown setting 'gpus'"),
])
def test_bad_ray_settings_one_line(overrides: dict, words: str) -> None:
    from video2dream.errors import UserError

    with pytest.raises((SettingError, UserError)) as e:
        resolve(overrides=overrides)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_workers_range_on_the_command_line(tmp_path, capsys) -> None:
    from conftest import cli, make_clip, one_line_error

    clip = make_clip(tmp_path / "c.mp4", "testsrc2=size=64x64:rate=5:duration=1")
    one_line_error(cli("run", clip, "-o", tmp_path / "run", "--workers", "2-8"), capsys.readouterr().err,
                   "range", "--backend ray")
    assert not (tmp_path / "run").exists()


class FakeCluster:
    """What pool_shape asks of the ray module: the cluster's resources and its nodes."""

    def __init__(self, gpus: float, nodes: list[float]) -> None:
        self.gpus, self.cpus = gpus, nodes

    def cluster_resources(self) -> dict:
        return {"GPU": self.gpus, "CPU": sum(self.cpus)} if self.gpus else {"CPU": sum(self.cpus)}

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": {"CPU": c}} for c in self.cpus]


def test_pool_shape_per_kind_share_and_range() -> None:
    from video2dream.backends.ray import Shape, pool_shape

    gpu = FakeCluster(2, [16, 16])
    s = resolve(overrides={"backend": "ray"})
    assert pool_shape(gpu, s, "caption", 100) == Shape(8, 8, 1.0, 0.25)  # four captioners per GPU
    assert pool_shape(gpu, s, "paint", 100) == Shape(2, 2, 1.0, 1.0)
    assert pool_shape(gpu, s, "paint", 1) == Shape(1, 1, 1.0, 1.0)  # never more actors than units
    ranged = resolve(overrides={"backend": "ray", "workers": "2-8", "ray": {"paint_gpus": 0.5, "cpus": 4}})
    assert pool_shape(gpu, ranged, "paint", 100) == Shape(2, 8, 4, 0.5)  # those beyond the cluster wait
    cpu = FakeCluster(0, [2, 2])
    assert pool_shape(cpu, s, "paint", 100) == Shape(2, 2, 2.0, 0.0)  # one per node, sharing its cores
    small = resolve(overrides={"backend": "ray", "workers": 8, "ray": {"cpus": 0.5}})
    assert pool_shape(cpu, small, "paint", 100) == Shape(8, 8, 0.5, 0.0)
