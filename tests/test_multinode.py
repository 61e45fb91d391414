"""One fit on several machines, proven on one: two processes stand in for two nodes, started with the commands of
docs/several-machines.md (torchrun, plain environment variables, a SLURM script), and end as one node with two
devices does, bit for bit; a requeue, a SIGTERM and a kill resume exactly; each launch mistake is one sentence."""

import errno
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from fresh_processes import env_with_tests_on_path

from conftest import CONFIGS, quiet_trainer_args, run_cli
from lit_tutorial import launch, lock
from lit_tutorial.lock import RunLock
from lit_tutorial.run_folder import newest_checkpoint
from lit_tutorial.settings import SETTINGS_KEY

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "several-machines.md"
# The page's runs, cut to a few batches (later arguments win).
TINY = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def page_commands() -> list[tuple[dict[str, str], list[str]]]:
    """Every command in the page's ``bash`` blocks as (environment variables set before it, arguments); the SLURM
    script is one command whose environment holds its ``#SBATCH`` options."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", PAGE.read_text(), re.S):
        sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", block, re.M))
        lines = re.sub(r"\\\n\s*", " ", block).splitlines()
        for line in (line.strip() for line in lines):
            if not line or line.startswith("#"):
                continue
            words = shlex.split(line)
            env = dict(word.split("=", 1) for word in words if re.fullmatch(r"[A-Z_]+=\S+", word))
            commands.append(({**env, **{f"SBATCH_{k}": v for k, v in sbatch.items()}}, words[len(env):]))
    return commands


def _page(kind: str) -> list[tuple[dict[str, str], list[str]]]:
    """The page's commands of one kind: ``torchrun fit``, ``torchrun test``, ``plain`` or ``srun``."""
    found = [(env, words) for env, words in page_commands()
             if {"torchrun fit": words[0] == "torchrun" and "fit" in words,
                 "torchrun test": words[0] == "torchrun" and "test" in words,
                 "plain": "NODE_RANK" in env, "srun": words[0] == "srun"}[kind]]
    assert found, kind
    return found


def test_every_command_on_the_page_is_run_here():
    kinds = ["torchrun fit", "torchrun test", "plain", "srun"]
    assert sum(len(_page(kind)) for kind in kinds) == len(page_commands()) == 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    """A new process's environment: tests/ importable, one thread, loopback for gloo, no launcher of our own."""
    env = {k: v for k, v in env_with_tests_on_path().items()
           if not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_")) and k not in launch.PLAIN_VARIABLES
           and k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "GROUP_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", **extra}


def _runnable(words: list[str], port: int) -> list[str]:
    """A page command as this machine runs it: node 0 at 127.0.0.1, a free port, this Python."""
    python = {"torchrun": [sys.executable, "-m", "torch.distributed.run"], "python": [sys.executable]}
    words = [w for w in words if w != "srun"]
    words = [*python.get(words[0], [words[0]]), *words[1:]]
    return [re.sub(r"--master_addr=\S+", "--master_addr=127.0.0.1", re.sub(r"--master_port=\d+",
                                                                            f"--master_port={port}", w))
            for w in words]


def _start(words: list[str], root: Path, extra: list[str] = (), **env: str) -> subprocess.Popen:
    return subprocess.Popen([*words, *TINY, *extra, f"--trainer.default_root_dir={root}"], cwd=REPO,
                            env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def start_nodes(kind: str, root: Path, extra: list[str] = ()) -> list[subprocess.Popen]:
    """Both nodes of one of the page's forms, as two processes of this machine."""
    port = _free_port()
    nodes = []
    for env, words in _page(kind):
        env = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)} if "MASTER_ADDR" in env else env
        nodes.append(_start(_runnable(words, port), root, extra, **env))
    return nodes


def start_slurm_tasks(root: Path, extra: list[str] = (), job_id: str = "4242", **more: str) -> list[subprocess.Popen]:
    """The page's SLURM script as ``srun`` would start it: one process per task, with the variables Lightning's
    SLURMEnvironment reads (the job name is not ``bash``/``interactive``, which would hide SLURM from Lightning)."""
    ((sbatch, words),) = _page("srun")
    nodes, per_node = int(sbatch["SBATCH_nodes"]), int(sbatch["SBATCH_ntasks-per-node"])
    port = _free_port()
    tasks = []
    for rank in range(nodes * per_node):
        env = {"SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": sbatch["SBATCH_job-name"], "SLURM_NODELIST": "127.0.0.1",
               "SLURM_NNODES": str(nodes), "SLURM_NTASKS": str(nodes * per_node),
               "SLURM_NTASKS_PER_NODE": str(per_node), "SLURM_PROCID": str(rank),
               "SLURM_NODEID": str(rank // per_node), "SLURM_LOCALID": str(rank % per_node),
               "MASTER_PORT": str(port), **more}
        tasks.append(_start(_runnable(words, port), root, extra, **env))
    return tasks


def finish(processes: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str, str]]:
    outputs = [p.communicate(timeout=timeout) for p in processes]
    return [(p.returncode, *output) for p, output in zip(processes, outputs, strict=True)]


def _weights(root: Path, name: str = "checkpoints/last.ckpt") -> dict[str, torch.Tensor]:
    return torch.load(root / name, weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    torch.testing.assert_close(_weights(a), _weights(b), rtol=0, atol=0)  # bit for bit


def _listing(root: Path) -> list[str]:
    """The run folder's files; TensorBoard's event file is named after host and process."""
    return sorted(re.sub(r"tfevents\..*", "tfevents", p.relative_to(root).as_posix())
                  for p in root.rglob("*") if p.is_file())


def _ok(results: list[tuple[int, str, str]]) -> None:
    for code, _, err in results:
        assert code == 0, err[-3000:]


@pytest.fixture(scope="module")
def first_runs(tmp_path_factory) -> dict[str, tuple[Path, list[tuple[int, str, str]]]]:
    """The page's torchrun fit on two "nodes", and the same run as one node with two devices (Lightning starts the
    second process), both started at once: most of their time is Pythons starting up."""
    ((_, words), *_) = _page("plain")
    one_node, two_nodes = tmp_path_factory.mktemp("one_node"), tmp_path_factory.mktemp("torchrun")
    started = {"one node": (one_node, [_start(_runnable(words, 0), one_node,
                                              ["--trainer.num_nodes=1", "--trainer.devices=2"])]),
               "torchrun": (two_nodes, start_nodes("torchrun fit", two_nodes))}
    return {name: (root, finish(processes)) for name, (root, processes) in started.items()}


@pytest.fixture(scope="module")
def one_node_two_devices(first_runs) -> Path:
    root, results = first_runs["one node"]
    _ok(results)
    return root


@pytest.fixture(scope="module")
def torchrun_nodes(first_runs) -> tuple[Path, list[tuple[int, str, str]]]:
    return first_runs["torchrun"]


def test_two_torchrun_nodes_train_exactly_as_one_node_with_two_devices(torchrun_nodes, one_node_two_devices):
    """Global rank = node rank x devices + local rank: the same shards, the same averaged gradients."""
    root, results = torchrun_nodes
    _ok(results)
    assert_same_weights(root, one_node_two_devices)
    # One run folder, written by global rank 0 alone: the files of the one-node run, no marker left behind.
    assert _listing(root) == _listing(one_node_two_devices)
    assert {".lock", "checkpoints/last.ckpt", "logs/config.yaml", "logs/hparams.yaml"} < set(_listing(root))
    (_, node0, _), (_, node1, _) = results
    assert "lit_tutorial: wrote" in node0 and "lit_tutorial: wrote" not in node1


@pytest.mark.slow
def test_two_torchrun_nodes_test_each_image_once(torchrun_nodes, tmp_path, capsys):
    root, _ = torchrun_nodes
    (_, node0, err), (_, node1, _) = results = finish(start_nodes("torchrun test", root))
    _ok(results)
    rows = re.findall(r"^(\d)\s+[\d.]+%\s+(\d+)/(\d+)$", node0, re.M)
    assert len(rows) == 10 and sum(int(total) for *_, total in rows) == 360 and not re.search(r"^\d\s", node1, re.M)
    ckpt = root / "checkpoints" / "last.ckpt"
    args = ["test", "--config", str(CONFIGS / "step10_digits.yaml"), "--ckpt_path", str(ckpt), *TINY]
    assert run_cli([*args, f"--trainer.default_root_dir={tmp_path}"])[0] == 0
    assert rows == re.findall(r"^(\d)\s+[\d.]+%\s+(\d+)/(\d+)$", capsys.readouterr().out, re.M)


@pytest.mark.slow
def test_plain_environment_nodes_train_as_one_node(tmp_path, one_node_two_devices):
    _ok(finish(start_nodes("plain", tmp_path)))
    assert_same_weights(tmp_path, one_node_two_devices)
    assert _listing(tmp_path) == _listing(one_node_two_devices)


@pytest.mark.slow
def test_slurm_tasks_train_as_one_node(tmp_path, one_node_two_devices):
    _ok(finish(start_slurm_tasks(tmp_path)))
    assert_same_weights(tmp_path, one_node_two_devices)


@pytest.mark.slow
def test_slurm_requeue_under_ddp_saves_once_at_the_same_step(tmp_path, one_node_two_devices):
    """SIGUSR1 to both tasks of the page's script in the middle of step 6: both processes agree on the step's end,
    save one requeue checkpoint together; the page's command again continues from it exactly."""
    job, wait = tmp_path / "job", ["--trainer.callbacks+=test_multinode.RequeueWhileTraining",
                                   "--trainer.callbacks.step=5"]
    tasks = start_slurm_tasks(job, wait, PATH=scontrol_stub(tmp_path))
    _wait_for(job / "mid-step", tasks)
    for task in tasks:
        task.send_signal(signal.SIGUSR1)
    (job / "signalled").touch()
    _wait_for(job / "hpc_ckpt_1.ckpt", tasks)
    for task in tasks:
        os.killpg(task.pid, signal.SIGKILL)
    finish(tasks)
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "4242"]
    assert torch.load(job / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == 6
    assert not list(job.glob("hpc_ckpt_2*"))
    _ok(finish(start_slurm_tasks(job, wait, PATH=scontrol_stub(tmp_path / "again"))))
    assert_same_weights(job, one_node_two_devices)


@pytest.mark.slow
def test_both_nodes_killed_mid_epoch_resume_with_auto(tmp_path, one_node_two_devices):
    """SIGKILL to both nodes in epoch 1 (after epoch 0's last.ckpt); the page's command again continues."""
    pause = ["--trainer.callbacks+=conftest.InterruptAt", "--trainer.callbacks.step=6",
             "--trainer.callbacks.how=wait_for_sigterm"]
    nodes = start_nodes("torchrun fit", tmp_path, ["--ckpt_path", "auto", *pause])
    _wait_for(tmp_path / "waiting", nodes)
    for node in nodes:
        os.killpg(node.pid, signal.SIGKILL)
    finish(nodes)
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    _ok(finish(start_nodes("torchrun fit", tmp_path, ["--ckpt_path", "auto"])))
    assert_same_weights(tmp_path, one_node_two_devices)


def _wait_for(path: Path, processes: list[subprocess.Popen], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        failed = [p for p in processes if p.poll() is not None]
        assert not failed and time.monotonic() < deadline, [p.communicate()[1][-3000:] for p in failed]
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_stops_every_node_and_the_same_command_resumes_exactly(tmp_path, one_node_two_devices):
    """The scheduler's SIGTERM reaches both nodes at step 6: each stops after it, node 0 saves that step."""
    extra = ["--ckpt_path", "auto", "--trainer.callbacks+=conftest.InterruptAt", "--trainer.callbacks.step=6",
             "--trainer.callbacks.how=wait_for_sigterm"]
    nodes = start_nodes("torchrun fit", tmp_path, extra)
    _wait_for(tmp_path / "waiting", nodes)
    for node in nodes:
        node.send_signal(signal.SIGTERM)  # torchrun passes it on to its process
    for code, _, err in finish(nodes):
        assert code != 0 and "stopped by SIGTERM" in err, err[-3000:]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    _ok(finish(start_nodes("torchrun fit", tmp_path, extra)))
    assert_same_weights(tmp_path, one_node_two_devices)


class RequeueWhileTraining(L.Callback):
    """A job's view of a requeue: in the middle of the step after ``step`` (gradients computed, weights not yet
    updated) it waits for the test's SIGUSR1; once a new requeue checkpoint exists it stands still, until the
    scheduler ends it."""

    def __init__(self, step: int = 14) -> None:
        self.step = step

    def on_train_start(self, trainer, pl_module) -> None:
        self.root = Path(trainer.default_root_dir)
        self.before = set(self.root.glob("hpc_ckpt_*"))

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            (self.root / "mid-step").touch()
            self._wait_for(lambda: (self.root / "signalled").exists())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if set(self.root.glob("hpc_ckpt_*")) - self.before:
            self._wait_for(lambda: False)

    @staticmethod
    def _wait_for(condition) -> None:
        deadline = time.monotonic() + 120
        while not condition():
            assert time.monotonic() < deadline, "the test did not come"
            time.sleep(0.02)


TWELVE_STEPS = ["--trainer.limit_train_batches=12"]


def scontrol_stub(tmp_path: Path) -> str:
    """A PATH whose ``scontrol`` writes its arguments to ``tmp_path/requeued`` instead of requeueing a job."""
    stub = tmp_path / "bin"
    stub.mkdir(parents=True)
    (stub / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/requeued\n')
    (stub / "scontrol").chmod(0o755)
    return f"{stub}{os.pathsep}{os.environ['PATH']}"


@pytest.mark.slow
def test_slurm_requeue_signal_saves_at_a_step_end_and_the_same_command_resumes(tmp_path, capsys):
    """A real SIGUSR1 in a (simulated) one-task SLURM job, landing in the middle of a step: Lightning's HPC
    checkpoint is taken at that step's end, carries the run's settings and asks ``scontrol`` to requeue; the job is
    then killed, and the same command with ``--ckpt_path auto`` continues from that checkpoint to the uninterrupted
    run's weights."""
    straight, job = tmp_path / "straight", tmp_path / "job"
    digits = ["--config", str(CONFIGS / "step10_digits.yaml")]
    assert run_cli(["fit", *digits, *TINY, *TWELVE_STEPS, f"--trainer.default_root_dir={straight}"])[0] == 0
    slurm = {"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "digits", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1",
             "SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
             "SLURM_NODELIST": "127.0.0.1", "PATH": scontrol_stub(tmp_path)}
    command = [sys.executable, "-m", "lit_tutorial", "fit", *digits, "--ckpt_path", "auto",
               "--trainer.callbacks+=test_multinode.RequeueWhileTraining"]
    process = _start(command, job, TWELVE_STEPS, **slurm)
    _wait_for(job / "mid-step", [process])
    process.send_signal(signal.SIGUSR1)
    (job / "signalled").touch()
    _wait_for(job / "hpc_ckpt_1.ckpt", [process])
    os.killpg(process.pid, signal.SIGKILL)  # the end of the job's time
    finish([process])
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "77"]
    hpc = torch.load(job / "hpc_ckpt_1.ckpt", weights_only=True)
    assert hpc["global_step"] == 15 and SETTINGS_KEY in hpc and "torch_rng_state" in hpc
    assert newest_checkpoint(job) == job / "hpc_ckpt_1.ckpt"

    (code, _, err), = finish([_start(command, job, TWELVE_STEPS, **slurm)])
    assert code == 0 and "Restoring states from the checkpoint path at" in err and "hpc_ckpt_1.ckpt" in err, err
    assert_same_weights(job, straight)


@pytest.mark.slow
def test_a_run_folder_only_node_0_sees_is_refused(tmp_path):
    """Node 1 is given a folder of its own, as a node whose path is a local disk would see it."""
    port = _free_port()
    nodes = []
    for (env, words), root in zip(_page("torchrun fit"), (tmp_path / "shared", tmp_path / "local"), strict=True):
        nodes.append(_start(_runnable(words, port), root, **env))
    for code, _, err in finish(nodes):
        assert code != 0 and "is on a disk that not every node sees" in err, err[-3000:]
        assert "Traceback" not in err.split("lit_tutorial: error:")[0], err[-3000:]
    assert not (tmp_path / "shared").exists() and not (tmp_path / "local").exists()


@pytest.mark.slow
def test_torchrun_world_size_not_matching_is_one_sentence(tmp_path):
    nodes = start_nodes("torchrun fit", tmp_path, ["--trainer.devices=2"])
    for _, _, err in finish(nodes):
        assert "torchrun started 2 processes in all" in err and "ValueError" not in err, err[-3000:]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


STEP8 = ["--config", str(CONFIGS / "step8_control_flow.yaml"), "--data.init_args.steps=10"]


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("lit_tutorial: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def clean_launch_env(monkeypatch):
    """No launcher variables of this process's own; a launch let through to Lightning fails at once instead of
    waiting for the other nodes for DDP's 30 minutes."""
    for name in [*os.environ]:
        if name.startswith(("SLURM_", "TORCHELASTIC_")) or name in (*launch.PLAIN_VARIABLES, "WORLD_SIZE", "RANK",
                                                                    "LOCAL_RANK", "GROUP_RANK"):
            monkeypatch.delenv(name)

    def never(*args, **kwargs):
        raise AssertionError("this launch reached Lightning's process group")

    monkeypatch.setattr(torch.distributed, "init_process_group", never)
    return monkeypatch


LAUNCH_MISTAKES = {
    "no launcher": ({}, ["--trainer.num_nodes=2"],
                    "trainer.num_nodes is 2 but nothing tells this process where the other nodes are "
                    "(MASTER_ADDR, MASTER_PORT, NODE_RANK unset)"),
    "torchrun": ({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"},
                 ["--trainer.num_nodes=2", "--trainer.devices=2"],
                 "torchrun started 2 processes in all (--nnodes x --nproc_per_node) but trainer.num_nodes x "
                 "trainer.devices is 2 x 2"),
    "slurm nodes": ({"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_PROCID": "0",
                     "SLURM_JOB_NAME": "x"}, ["--trainer.num_nodes=1", "--trainer.devices=1"],
                    "the SLURM job has --nodes=2 and --ntasks-per-node=1 but trainer.num_nodes is 1"),
    "slurm ntasks": ({"SLURM_NTASKS": "2", "SLURM_NNODES": "1", "SLURM_PROCID": "0", "SLURM_JOB_NAME": "x"},
                     ["--trainer.devices=2"], "--ntasks-per-node=unset"),
    "world size": ({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", "NODE_RANK": "0", "WORLD_SIZE": "4"},
                   ["--trainer.num_nodes=2", "--trainer.devices=1"],
                   "WORLD_SIZE is 4 but trainer.num_nodes x trainer.devices is 2 x 1"),
}


@pytest.mark.parametrize("mistake", LAUNCH_MISTAKES)
def test_launch_mistakes_are_one_sentence_before_anything_is_written(mistake, clean_launch_env, tmp_path, capsys):
    env, args, expected = LAUNCH_MISTAKES[mistake]
    for name, value in env.items():
        clean_launch_env.setenv(name, value)
    root = tmp_path / "run"
    code, err = run_cli(["fit", *STEP8, *args, *quiet_trainer_args(root)], capsys)
    assert code == 2 and expected in _error_line(err)
    assert not root.exists()


def test_a_node_that_cannot_reach_node_0_says_where_it_looked(clean_launch_env, tmp_path, capsys):
    port = _free_port()  # nothing listens there
    for name, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": "1"}.items():
        clean_launch_env.setenv(name, value)
    clean_launch_env.setattr(launch, "MASTER_TIMEOUT_S", 1.0)
    started = time.monotonic()
    code, err = run_cli(["fit", *STEP8, "--trainer.num_nodes=2", *quiet_trainer_args(tmp_path / "run")], capsys)
    assert code == 2 and f"MASTER_ADDR:MASTER_PORT = 127.0.0.1:{port} within 1 s" in _error_line(err)
    assert time.monotonic() - started < 10

    with socket.create_server(("127.0.0.1", port)):  # node 0 listening: the check lets the node through
        launch._wait_for_master(launch.LightningEnvironment(), rank_zero=False)


def flock_failing_with(code: int):
    """``fcntl.flock`` as a filesystem answers that does not support it (ENOLCK, EOPNOTSUPP)."""

    def flock(*args):
        raise OSError(code, os.strerror(code))

    return flock


@pytest.fixture
def no_flock(monkeypatch):
    monkeypatch.setattr(lock.fcntl, "flock", flock_failing_with(errno.ENOLCK))
    return monkeypatch


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_filesystem_without_flock_gets_a_lock_file(code, no_flock, tmp_path):
    no_flock.setattr(lock.fcntl, "flock", flock_failing_with(code))
    owner = tmp_path / ".lock.owner"
    first = RunLock(tmp_path)
    first.acquire()
    assert owner.read_text() == f"{socket.gethostname()} {os.getpid()}"
    with pytest.raises(lock.UserError, match=r"another fit is writing into .* \(process \d+ on host"):
        RunLock(tmp_path).acquire()
    first.release()
    assert not owner.exists()

    # Another error from flock is not a missing feature: it keeps its traceback.
    no_flock.setattr(lock.fcntl, "flock", flock_failing_with(errno.EBADF))
    with pytest.raises(OSError, match="Bad file descriptor"):
        RunLock(tmp_path).acquire()


def test_a_lock_file_left_by_a_killed_run_on_this_host_is_taken_over(no_flock, tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    owner = tmp_path / ".lock.owner"
    owner.write_text(f"{socket.gethostname()} {gone.pid}")
    assert run_cli(["fit", *STEP8, *quiet_trainer_args(tmp_path)])[0] == 0
    assert not owner.exists() and (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_ckpt_path_auto_starts_a_run_then_continues_it(tmp_path, capsys):
    """One command for the first start and every restart; ``last`` still needs a checkpoint; settings checked."""
    straight, job = tmp_path / "straight", tmp_path / "job"
    assert run_cli(["fit", *STEP8, "--trainer.max_epochs=2", *quiet_trainer_args(straight)])[0] == 0
    auto = ["fit", *STEP8, "--ckpt_path", "auto", *quiet_trainer_args(job)]
    assert run_cli([*auto, "--trainer.max_epochs=1"])[0] == 0  # an empty folder: a fresh start
    assert run_cli([*auto, "--trainer.max_epochs=2"])[0] == 0  # the same line: continues
    assert_same_weights(job, straight)
    code, err = run_cli([*auto, "--trainer.max_epochs=3", "--trainer.accumulate_grad_batches=2"], capsys)
    assert code == 2 and "was trained with trainer.accumulate_grad_batches=1" in _error_line(err)


def test_auto_takes_the_newest_of_last_and_hpc_checkpoints(tmp_path):
    assert newest_checkpoint(tmp_path) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    for age, path in enumerate([tmp_path / "hpc_ckpt_2.ckpt", last, tmp_path / "hpc_ckpt_1.ckpt"]):
        path.write_bytes(b"")
        os.utime(path, ns=(10**18 - age, 10**18 - age))
    assert newest_checkpoint(tmp_path) == tmp_path / "hpc_ckpt_2.ckpt"
    os.utime(last, ns=(2 * 10**18, 2 * 10**18))
    assert newest_checkpoint(tmp_path) == last


def test_overwrite_also_removes_requeue_checkpoints(tmp_path, capsys):
    """Under SLURM Lightning itself would resume from an ``hpc_ckpt`` left in the folder."""
    assert run_cli(["fit", *STEP8, *quiet_trainer_args(tmp_path)])[0] == 0
    (tmp_path / "checkpoints" / "last.ckpt").rename(tmp_path / "hpc_ckpt_1.ckpt")
    code, err = run_cli(["fit", *STEP8, *quiet_trainer_args(tmp_path)], capsys)
    assert code == 2 and "holds the checkpoints of an earlier run" in _error_line(err)
    assert run_cli(["fit", *STEP8, "--overwrite=true", *quiet_trainer_args(tmp_path)])[0] == 0
    assert not list(tmp_path.glob("hpc_ckpt_*"))
