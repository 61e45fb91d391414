"""A resumable batch loader over in-memory tensors: batches gathered by indexing, no per-sample Python."""

from collections.abc import Iterator

import torch


class EpochOrder:
    """The sample order of one epoch: ``torch.randperm`` from a generator seeded with ``seed * 100_003 + epoch + 1``
    (the data's ``seed``, not ``seed_everything``), or the natural order.

    It is the loader's ``sampler``: Lightning calls ``set_epoch`` on a dataloader's sampler before every training
    and evaluation epoch, with the epoch it is about to run (also after a resume), so the order never depends on
    what ran before in this process. :class:`TensorLoader` moves it on to ``epoch + 1`` as an epoch starts, before
    it draws that epoch's order (so that, used on its own, the next pass is the next epoch): hence the ``+ 1``.
    """

    def __init__(self, shuffle: bool, seed: int) -> None:
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def permutation(self, n: int) -> torch.Tensor | None:
        """The order of ``n`` samples drawn from ``seed * 100_003 + self.epoch``; ``None`` is the natural order."""
        if not self.shuffle:
            return None
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))


class TensorLoader:
    """Serves batches of ``tensors`` (indexed on dim 0), in the order of its :class:`EpochOrder` ``sampler``.

    The loader records the epoch and the batches it has served; Lightning saves that in checkpoints
    (``state_dict``), and a run resumed mid-epoch continues with the very next batch. Under distributed training
    each process takes every ``world_size``-th sample of the epoch's order; training drops the uneven tail so every
    process steps equally often, evaluation keeps it so nothing is counted twice and nothing is missed. Batches are
    gathered in the training process unless ``num_workers`` asks for worker processes.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        subset: torch.Tensor | None = None,
        shuffle: bool = False,
        seed: int = 0,
        passes: int = 1,
        rank: int = 0,
        world_size: int = 1,
        even_shards: bool = False,
        num_workers: int = 0,
    ) -> None:
        self.tensors = tensors
        self.subset = subset  # serve only these rows (a split), without copying the tensors
        self.batch_size = batch_size
        self.sampler = EpochOrder(shuffle, seed)
        self.batch_sampler = None  # Lightning looks for both on anything that has a ``sampler``
        self.passes = passes
        self.rank = rank
        self.world_size = world_size
        self.even_shards = even_shards
        self.num_workers = num_workers
        self.epoch = -1
        self.served = 0
        self._resume: dict | None = None

    def _rows(self) -> int:
        return len(self.tensors[0]) if self.subset is None else len(self.subset)

    def _shard_size(self) -> int:
        n = self._rows()
        if self.even_shards:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        return self.passes * -(-self._shard_size() // self.batch_size)

    def _indices(self) -> torch.Tensor | None:
        """This process's sample order for the sampler's epoch; ``None``: all samples in order (slices, no copy)."""
        order = self.sampler.permutation(self._rows())
        if order is None and self.world_size == 1 and self.subset is None:
            return None
        order = torch.arange(self._rows()) if order is None else order
        order = order[self.rank :: self.world_size][: self._shard_size()]
        order = order if self.subset is None else self.subset[order]
        return order.to(self.tensors[0].device)  # once per epoch, not per batch, for device-resident data

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        # A generator: nothing is decided until the first batch is asked for. Lightning creates the iterator
        # before it calls ``set_epoch`` for the epoch it resumes, so deciding here would replay the wrong order.
        return self._epoch()

    def _epoch(self) -> Iterator[tuple[torch.Tensor, ...]]:
        resume, self._resume = self._resume, None
        self.epoch = self.sampler.epoch
        self.sampler.set_epoch(self.epoch + 1)  # used on its own, the next epoch follows; Lightning overrides it
        # A state saved in this very epoch continues after its last served batch; any other starts afresh.
        self.served = resume["served"] if resume is not None and resume["epoch"] == self.epoch else 0
        yield from self._batches(self._indices(), self.served)

    def _batches(self, indices: torch.Tensor | None, skip: int) -> Iterator[tuple[torch.Tensor, ...]]:
        batches = _EpochBatches(self, indices)
        if self.num_workers:
            # Worker processes gather the batches; the order, and so the results, are the same as in-process.
            loader = torch.utils.data.DataLoader(
                batches, batch_size=None, sampler=range(skip, len(self)), num_workers=self.num_workers
            )
            source = iter(loader)
        else:
            source = (batches[b] for b in range(skip, len(self)))
        for b, batch in enumerate(source, start=skip):
            self.served = b + 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "served": self.served}

    def load_state_dict(self, state: dict) -> None:
        finished = state["served"] >= len(self)
        self._resume = None if finished else dict(state)
        self.sampler.set_epoch(state["epoch"] + finished)


class _EpochBatches(torch.utils.data.Dataset):
    """Batch ``b`` of one epoch's order, for the loader itself or for DataLoader worker processes."""

    def __init__(self, loader: TensorLoader, indices: torch.Tensor | None) -> None:
        self.tensors, self.indices, self.batch_size = loader.tensors, indices, loader.batch_size
        self.size = loader._shard_size()
        self.per_pass = -(-self.size // self.batch_size)

    def __getitem__(self, b: int) -> tuple[torch.Tensor, ...]:
        start = (b % self.per_pass) * self.batch_size
        stop = min(start + self.batch_size, self.size)
        if self.indices is None:
            return tuple(t[start:stop] for t in self.tensors)
        return tuple(t[self.indices[start:stop]] for t in self.tensors)
