"""One fit on several machines: what the project checks around Lightning's launch, and its run folder there.

Lightning does the distributed work (DDP; processes started by torchrun, by SLURM's ``srun``, or by hand with
``MASTER_ADDR``/``MASTER_PORT``/``NODE_RANK``). What it cannot know, this module checks: that ``num_nodes`` and
``devices`` match what the launcher started, that another node can reach node 0 at all, that every node sees
rank 0's run folder, and it keeps a SLURM requeue checkpoint at a step boundary. It also holds the run lock for
filesystems without ``flock``. See docs/several-machines.md.
"""

import os
import signal
import socket
import time
import uuid
from pathlib import Path

import lightning as L
import torch
from jsonargparse import Namespace
from lightning.fabric.plugins.environments import (
    LightningEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

from lit_tutorial.errors import UserError

#: How long a node other than node 0 waits for node 0 to accept connections before giving up: the nodes of a job
#: are seldom started at the same moment.
MASTER_TIMEOUT_S = 300.0
#: What a node sets to join a run started by hand (Lightning's own environment).
PLAIN_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK")


def check_launch(trainer: Namespace) -> None:
    """Refuse, before Lightning starts, a launch that would fail deep inside it or wait for ever."""
    num_nodes, devices = trainer.num_nodes, _device_count(trainer.devices)
    if TorchElasticEnvironment.detect():
        world_size = int(os.environ["WORLD_SIZE"])
        if devices is not None and devices * num_nodes != world_size:
            raise UserError(
                f"torchrun started {world_size} processes in all (--nnodes x --nproc_per_node) but trainer.num_nodes "
                f"x trainer.devices is {num_nodes} x {devices}; pass --trainer.num_nodes equal to torchrun's --nnodes "
                "and --trainer.devices equal to its --nproc_per_node."
            )
    elif SLURMEnvironment.detect():
        nodes, tasks = os.environ.get("SLURM_NNODES", "1"), os.environ.get("SLURM_NTASKS_PER_NODE")
        if (tasks is None and int(os.environ["SLURM_NTASKS"]) > 1 or nodes != str(num_nodes)
                or devices is not None and tasks not in (None, str(devices))):
            raise UserError(
                f"the SLURM job has --nodes={nodes} and --ntasks-per-node={tasks or 'unset'} but trainer.num_nodes is "
                f"{num_nodes} and trainer.devices is {trainer.devices}; set #SBATCH --nodes to num_nodes and "
                "--ntasks-per-node to devices (one task per device), and start the command with srun."
            )
        _wait_for_master(SLURMEnvironment(), os.environ["SLURM_PROCID"] == "0")
    elif num_nodes > 1 and not (LSFEnvironment.detect() or MPIEnvironment.detect()):
        missing = [name for name in PLAIN_VARIABLES if name not in os.environ]
        if missing:
            raise UserError(
                f"trainer.num_nodes is {num_nodes} but nothing tells this process where the other nodes are "
                f"({', '.join(missing)} unset); start it on every node with torchrun or srun, or set MASTER_ADDR, "
                "MASTER_PORT, NODE_RANK and WORLD_SIZE (see docs/several-machines.md)."
            )
        world_size = os.environ.get("WORLD_SIZE")
        if devices is not None and world_size is not None and int(world_size) != devices * num_nodes:
            raise UserError(
                f"WORLD_SIZE is {world_size} but trainer.num_nodes x trainer.devices is {num_nodes} x {devices}; "
                "set WORLD_SIZE to their product on every node."
            )
        environment = LightningEnvironment()
        _wait_for_master(environment, os.environ["NODE_RANK"] == "0" and environment.local_rank() == 0)


def _device_count(devices) -> int | None:
    """How many devices ``trainer.devices`` names, or None where only Lightning can tell ("auto", -1)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([part for part in text.split(",") if part.strip()])
    return int(text) if text.isdigit() else None


def _wait_for_master(environment, rank_zero: bool) -> None:
    """A process other than global rank 0 joins rank 0's store: without this it would wait there for as long as
    DDP's timeout (30 minutes), saying nothing."""
    if rank_zero:
        return
    address, port = environment.main_address, environment.main_port
    deadline = time.monotonic() + MASTER_TIMEOUT_S
    while True:
        try:
            socket.create_connection((address, port), timeout=5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise UserError(
                    f"this node could not reach node 0 at MASTER_ADDR:MASTER_PORT = {address}:{port} within "
                    f"{MASTER_TIMEOUT_S:g} s; start node 0 too, and check that this address is node 0's as seen from "
                    "here and that no firewall closes the port."
                ) from None
            time.sleep(0.5)


class SharedRunFolder(L.Callback):
    """Every node must see rank 0's run folder: rank 0 writes a marker there, the others look for it.

    Without this, a node with its own local disk would train on, keep no checkpoint, and its outputs would be
    missing from the run folder, or be written into a second, half run.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.num_nodes == 1:
            return  # the processes of one machine share its disks
        strategy = trainer.strategy
        marker = Path(trainer.default_root_dir) / f".node-check-{strategy.broadcast(uuid.uuid4().hex)}"
        if trainer.is_global_zero:
            marker.touch()
        strategy.barrier("lit_tutorial.shared_run_folder")
        seen = marker.exists()
        everywhere = strategy.reduce_boolean_decision(seen, all=True)  # every process has looked once this returns
        if trainer.is_global_zero:
            marker.unlink()
        if not everywhere:
            where = "this node does not" if not seen else "another node does not"
            raise UserError(
                f"the run folder {trainer.default_root_dir} is on a disk that not every node sees ({where}); give "
                "--trainer.default_root_dir a folder on a filesystem every node mounts at the same path."
            )


class RequeueAtStepEnd(L.Callback):
    """Moves Lightning's SLURM requeue (an HPC checkpoint, then ``scontrol requeue``) to the end of a step.

    Lightning saves that checkpoint from the signal handler itself, wherever the signal lands: in the middle of a
    step it holds half a step (the batch is redone on resume, with other random numbers) and, under DDP, each
    process would save at its own moment. Here the signal only sets a flag; at the next step end outside a
    gradient-accumulation window all processes agree on it and run Lightning's handler together.
    """

    def __init__(self) -> None:
        self._lightning_handler = None
        self._signal = signal.SIGUSR1
        self._pending = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not SLURMEnvironment.detect():
            return
        # Lightning installs its handler only with auto-requeue on (the default).
        environment = getattr(trainer.strategy, "cluster_environment", None)  # none on a single device
        self._signal = getattr(environment, "requeue_signal", None) or signal.SIGUSR1
        self._lightning_handler = signal.getsignal(self._signal)
        if callable(self._lightning_handler):
            signal.signal(self._signal, self._remember)

    def _remember(self, number, frame) -> None:
        self._pending = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not callable(self._lightning_handler):
            return
        done = batch_idx + 1
        if done % trainer.accumulate_grad_batches and done != trainer.num_training_batches:
            return
        if trainer.strategy.reduce_boolean_decision(self._pending, all=False):
            self._pending = False
            self._lightning_handler(self._signal, None)


# What ``fcntl.flock`` raises on a filesystem that does not support it (some network and FUSE filesystems).
def check_accelerator(accelerator: str) -> None:
    """``accelerator: gpu`` (the GPU overlay) on a machine without a usable GPU: one sentence, not Lightning's."""
    cuda = torch.cuda.is_available()
    if not cuda:
        _plain_cuda_check()
    has_gpu = cuda or (accelerator == "gpu" and torch.backends.mps.is_available())
    if accelerator in ("gpu", "cuda") and not has_gpu:
        raise UserError(f"trainer.accelerator is {accelerator} but this machine has no usable GPU; drop the GPU "
                        "overlay (configs/overlays/gpu.yaml) or pass --trainer.accelerator=cpu.")


def _plain_cuda_check() -> None:
    """On a machine without a CUDA GPU, let ``torch.cuda.is_available()`` answer from its cached result again.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` so that looking for GPUs never initialises CUDA in
    a process that may fork. Without a GPU there is nothing to protect, and each check then retries loading NVML,
    which torch's Adam and Adadelta do on every step.
    """
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
