"""Two commands sharing one --generators folder (a run split over processes with --resume): an index write keeps the
entries another process added since this one read the index, and a generator being trained by another process is
waited for and reused, not trained twice."""

import contextlib
import threading

import pytest
from filelock import FileLock

from inspect_train.data.category import load_category
from inspect_train.protocol import get_partition, make_manifest, read_json


@pytest.fixture(scope="module")
def toy(toy_root):
    return load_category(toy_root, "toy", size=(32, 32))


@pytest.fixture(scope="module")
def manifest(toy):
    return make_manifest(toy.index, partitions=2, seed=0)


def base(manifest, k):
    return {t: split["base"] for t, split in get_partition(manifest, k)["defects"].items()}


def painters(toy, folder):
    """The painters' cache whose own folder is `folder` (a run keeps it in <generators>/inpaint)."""
    from inspect_train.tasks.generators import GeneratorCache, at_size
    from generators.registry import get_spec

    spec = get_spec("inpaint")
    plan = spec.learned.plan(toy, {"steps": 1}, "cpu")
    return GeneratorCache(spec, plan, folder, at_size(toy, plan.size), seed=0, device="cpu", manifest_path="m.json",
                          progress=False, say=lambda m: None)


def spy_on_training(monkeypatch):
    import generators.inpaint.api as api

    trained, real_fit = [], api.fit_inpaint

    def spy(images, masks, goods, defect, out, **kw):
        trained.append((threading.current_thread().name, kw["extra"]["partition"], defect))
        return real_fit(images, masks, goods, defect, out, **kw)

    monkeypatch.setattr(api, "fit_inpaint", spy)
    return trained


def test_an_index_write_keeps_what_another_process_recorded(toy, manifest, tmp_path, monkeypatch):
    trained = spy_on_training(monkeypatch)
    first, second = painters(toy, tmp_path), painters(toy, tmp_path)  # both read the empty index
    one = first.checkpoints(1, base(manifest, 1))
    two = second.checkpoints(2, base(manifest, 2))  # its index in memory predates the P1 entries
    on_disk = read_json(tmp_path / "index.json", "index")["defects"]
    assert sorted(on_disk) == ["p1", "p2"], "P1's entries survive P2's write"
    assert sorted(on_disk["p1"]) == sorted(one) and sorted(on_disk["p2"]) == sorted(two)
    trained.clear()
    again = painters(toy, tmp_path)
    assert again.checkpoints(1, base(manifest, 1)) == one and again.checkpoints(2, base(manifest, 2)) == two
    assert trained == [], "both partitions reused"


def test_a_generator_in_training_elsewhere_is_waited_for_and_reused(toy, manifest, tmp_path, monkeypatch):
    trained = spy_on_training(monkeypatch)
    defect, names = sorted(base(manifest, 1).items())[0]
    waiting, said = painters(toy, tmp_path), []
    waiting.say = said.append
    other_process = FileLock(str(tmp_path / f".p1-{defect}.lock"))
    other_process.acquire()
    result = {}
    thread = threading.Thread(target=lambda: result.update(waiting.checkpoints(1, {defect: names})),
                              name="waiting")
    thread.start()
    try:
        for _ in range(200):  # until the waiting cache has found the lock taken
            if said:
                break
            thread.join(0.05)
        assert said and said[0].startswith("waiting: another process is training p1-" + defect), said
        assert thread.is_alive()
        trainer = painters(toy, tmp_path)  # the other process, which holds the lock, trains meanwhile
        trainer._training = lambda name: contextlib.nullcontext()
        made = trainer.checkpoints(1, {defect: names})
    finally:
        other_process.release()
    thread.join(60)
    assert not thread.is_alive()
    assert result == made
    assert [who for who, _, _ in trained] == [threading.main_thread().name], "trained once, by the other process"
    assert "reusing" in said[-1]


def test_the_backbone_in_training_elsewhere_is_waited_for(toy, tmp_path, monkeypatch):
    import generators.dfmgan.api as api
    from generators.dfmgan.spec import backbone
    from inspect_train.tasks.generators import open_cache

    calls = []
    monkeypatch.setattr(api, "fit_backbone", lambda *a, **kw: calls.append(kw) or (tmp_path / "x.pt"))
    cache = open_cache("dfmgan", toy, {"config": "dfmgan-tiny"}, tmp_path, seed=0, device="cpu",
                       manifest_path="m.json", progress=False, say=lambda m: None)
    other_process = FileLock(str(tmp_path / ".backbone.lock"))
    other_process.acquire()
    result = []
    thread = threading.Thread(target=lambda: result.append(backbone(cache)))
    thread.start()
    try:
        thread.join(0.5)
        assert thread.is_alive(), "waits while the other process holds the backbone"
        checkpoint = tmp_path / "backbone" / "backbone.pt"
        checkpoint.parent.mkdir()
        checkpoint.write_bytes(b"trained elsewhere")
        other = open_cache("dfmgan", toy, {"config": "dfmgan-tiny"}, tmp_path, seed=0, device="cpu",
                           manifest_path="m.json", progress=False, say=lambda m: None)
        other.update_index(lambda index: index.__setitem__("backbone", {"checkpoint": "backbone/backbone.pt",
                                                                        "steps": 1}))
    finally:
        other_process.release()
    thread.join(30)
    assert result == [checkpoint] and calls == [], "reused, not trained again"
