"""TensorLoader: the seeded order, resuming mid-epoch, and sharding across processes."""

import torch

from lit_tutorial.data.loader import TensorLoader


def _indices(loader) -> list[list[int]]:
    return [batch[0].tolist() for batch in loader]


def test_order_is_a_function_of_seed_and_epoch():
    data = torch.arange(10)
    first, second = TensorLoader(data, batch_size=3, shuffle=True, seed=1), TensorLoader(data, batch_size=3,
                                                                                       shuffle=True, seed=1)
    epochs = [_indices(first), _indices(first)]
    assert epochs == [_indices(second), _indices(second)]
    assert epochs[0] != epochs[1] and sorted(sum(epochs[0], [])) == list(range(10))
    assert len(first) == 4 and [len(b) for b in epochs[0]] == [3, 3, 3, 1]


def test_resume_mid_epoch_continues_with_the_next_batch():
    data = torch.arange(12)
    straight = TensorLoader(data, batch_size=2, shuffle=True, seed=3)
    _indices(straight)
    expected = _indices(straight)  # epoch 1

    crashed = TensorLoader(data, batch_size=2, shuffle=True, seed=3)
    _indices(crashed)
    iterator = iter(crashed)
    seen = [next(iterator)[0].tolist() for _ in range(2)]
    resumed = TensorLoader(data, batch_size=2, shuffle=True, seed=3)
    resumed.load_state_dict(crashed.state_dict())
    assert seen + _indices(resumed) == expected
    # A state saved after the last batch of an epoch resumes at the next epoch.
    resumed.load_state_dict(resumed.state_dict())
    assert resumed.epoch == 1 and _indices(resumed) != expected and resumed.epoch == 2


def test_shards_cover_every_sample_once_for_evaluation_and_evenly_for_training():
    data = torch.arange(21)
    shards = [_indices(TensorLoader(data, batch_size=4, rank=r, world_size=2)) for r in range(2)]
    flat = [sorted(sum(s, [])) for s in shards]
    assert sorted(flat[0] + flat[1]) == list(range(21)) and not set(flat[0]) & set(flat[1])
    train = [TensorLoader(data, batch_size=4, shuffle=True, rank=r, world_size=2, even_shards=True) for r in range(2)]
    assert len(train[0]) == len(train[1]) == 3
    assert [len(sum(_indices(t), [])) for t in train] == [10, 10]


def test_passes_repeat_the_data_without_copying():
    x = torch.randn(4, 3)
    batches = list(TensorLoader(x, batch_size=4, passes=5))
    assert len(batches) == 5 and all(b[0].data_ptr() == x.data_ptr() for b in batches)


def test_worker_processes_serve_the_same_batches_and_resume():
    images = torch.randint(0, 256, (37, 3, 4, 4), dtype=torch.uint8)
    labels = torch.arange(37)

    def make(workers: int) -> TensorLoader:
        return TensorLoader(images, labels, batch_size=5, shuffle=True, seed=2, num_workers=workers)

    in_process, with_workers = make(0), make(2)
    for _ in range(2):  # two epochs
        expected, got = list(in_process), list(with_workers)
        assert len(got) == len(expected) == 8
        assert all(torch.equal(a, b) for pair in zip(got, expected, strict=True) for a, b in zip(*pair, strict=True))

    iterator = iter(with_workers)
    next(iterator), next(iterator)
    resumed = make(2)
    resumed.load_state_dict(with_workers.state_dict())
    rest = [batch[1].tolist() for batch in resumed]
    assert rest == [batch[1].tolist() for batch in iterator]


def test_epoch_order_comes_from_the_data_seed_and_the_epoch_alone():
    """Epoch ``e``'s order is ``randperm`` seeded with ``seed * 100_003 + e + 1`` (loader.py's docstring), whatever
    the global seed (``seed_everything``) is."""
    loader = TensorLoader(torch.arange(12), batch_size=12, shuffle=True, seed=3)
    for epoch in (0, 1, 5):
        torch.manual_seed(epoch)
        loader.sampler.set_epoch(epoch)
        expected = torch.randperm(12, generator=torch.Generator().manual_seed(3 * 100_003 + epoch + 1))
        assert torch.equal(next(iter(loader))[0], expected)
