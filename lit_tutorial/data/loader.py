"""A resumable batch loader over in-memory tensors: no worker processes, no per-sample Python."""

from collections.abc import Callable, Iterator

import torch


class TensorLoader:
    """Serves batches of ``tensors`` (indexed on dim 0), shuffled as a function of (seed, epoch).

    The epoch comes from ``epoch_source`` (the trainer's epoch) or, without one, counts ``iter()`` calls. The
    loader records the epoch and the batches it has served, Lightning saves that in checkpoints (``state_dict``),
    and a run resumed mid-epoch continues with the very next batch. Under distributed training each process
    takes every ``world_size``-th sample of the epoch's order; training drops the uneven tail so every process
    steps equally often, evaluation keeps it so nothing is counted twice and nothing is missed.
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
        epoch_source: Callable[[], int] | None = None,
        num_workers: int = 0,
    ) -> None:
        self.tensors = tensors
        self.subset = subset  # serve only these rows (a split), without copying the tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.passes = passes
        self.rank = rank
        self.world_size = world_size
        self.even_shards = even_shards
        self.epoch_source = epoch_source
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
        """This process's sample order for ``self.epoch``; ``None`` means all samples in order (slices, no copy)."""
        n = self._rows()
        if not self.shuffle and self.world_size == 1 and self.subset is None:
            return None
        if self.shuffle:
            # One generator per (seed, epoch): the order never depends on what ran before, so resumes replay it.
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        else:
            order = torch.arange(n)
        order = order[self.rank :: self.world_size][: self._shard_size()]
        order = order if self.subset is None else self.subset[order]
        return order.to(self.tensors[0].device)  # once per epoch, not per batch, for device-resident data

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self._resume is not None:
            self.epoch, self.served = self._resume["epoch"], self._resume["served"]
            self._resume = None
            if self.served >= len(self):
                self.epoch, self.served = self.epoch + 1, 0
        else:
            self.epoch = self.epoch_source() if self.epoch_source else self.epoch + 1
            self.served = 0
        return self._batches(self._indices(), self.served)

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
        self._resume = dict(state)


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
