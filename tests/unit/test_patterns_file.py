"""The built-in pattern library on real-looking log lines: what must match, what must not, in what order."""
from __future__ import annotations

import json
import pathlib
from typing import Callable, List, Optional, Tuple

import pytest

from core.analysis.analyzer import SEVERITIES, Pattern, analyze, parse_patterns
from core.analysis.jobend import JobEnd

ROOT = pathlib.Path(__file__).resolve().parents[2]
PATTERNS_FILE = ROOT / "patterns" / "error_patterns.json"
LOG_FIXTURES = ROOT / "tests" / "fixtures" / "logs"

REQUIRED_IDS = (
    "cuda_oom", "slurm_oom", "memory_error", "cpp_bad_alloc", "killed_signal", "segfault", "bus_error",
    "illegal_instruction", "nccl_error", "nccl_timeout", "cuda_error", "gpu_ecc_xid", "no_gpu",
    "distributed_rendezvous", "address_in_use", "mpi_abort", "dataloader_killed", "import_error",
    "file_not_found", "permission_denied", "disk_quota", "slurm_timeout", "slurm_cancelled", "node_fail",
    "nan_loss", "python_traceback", "cuda_driver_mismatch", "cuda_arch_mismatch", "shared_library_error",
    "stale_file_handle", "too_many_open_files", "network_unreachable", "command_not_found", "preempted",
    "checkpoint_corrupt",
)


@pytest.fixture(scope="module")
def library() -> Tuple[Pattern, ...]:
    return parse_patterns(PATTERNS_FILE.read_text(encoding="utf-8"), str(PATTERNS_FILE))


def category_of(line: str, library: Tuple[Pattern, ...]) -> Optional[str]:
    analysis = analyze([line], library)
    return analysis.categories[0] if analysis.categories else None


# -- the file itself ------------------------------------------------------------------------
def test_file_has_documentation_and_schema_version():
    document = json.loads(PATTERNS_FILE.read_text(encoding="utf-8"))
    assert document["schema_version"] == 1
    assert "ORDER" in document["_doc"]


def test_every_required_id_is_present(library):
    ids = [p.id for p in library]
    assert sorted(set(REQUIRED_IDS) - set(ids)) == []


def test_entries_have_severity_description_and_a_one_line_hint(library):
    for pattern in library:
        assert pattern.severity in SEVERITIES
        assert len(pattern.description) > 30, pattern.id
        assert 20 < len(pattern.hint) < 200 and "\n" not in pattern.hint, pattern.id


def test_generic_categories_come_last(library):
    ids = [p.id for p in library]
    assert ids[-2:] == ["python_traceback", "slurm_cancelled"]


@pytest.mark.parametrize("specific, generic", [
    ("cuda_oom", "cuda_error"),
    ("cuda_oom", "nccl_error"),
    ("gpu_ecc_xid", "cuda_error"),
    ("no_gpu", "cuda_error"),
    ("nccl_timeout", "nccl_error"),
    ("slurm_oom", "killed_signal"),
    ("dataloader_killed", "bus_error"),
    ("dataloader_killed", "killed_signal"),
    ("address_in_use", "distributed_rendezvous"),
    ("import_error", "file_not_found"),
    ("disk_quota", "file_not_found"),
    ("slurm_timeout", "slurm_cancelled"),
    ("node_fail", "slurm_cancelled"),
    ("segfault", "python_traceback"),
    ("too_many_open_files", "dataloader_killed"),
    ("cuda_driver_mismatch", "no_gpu"),
    ("cuda_driver_mismatch", "cuda_error"),
    ("cuda_arch_mismatch", "cuda_error"),
    ("shared_library_error", "import_error"),
    ("shared_library_error", "file_not_found"),
    ("command_not_found", "import_error"),
    ("command_not_found", "file_not_found"),
    ("stale_file_handle", "file_not_found"),
    ("stale_file_handle", "permission_denied"),
    ("checkpoint_corrupt", "file_not_found"),
    ("checkpoint_corrupt", "python_traceback"),
    ("preempted", "slurm_cancelled"),
    ("node_fail", "preempted"),
    ("disk_quota", "checkpoint_corrupt"),
])
def test_specific_cause_ranks_above_generic(library, specific, generic):
    ids = [p.id for p in library]
    assert ids.index(specific) < ids.index(generic)


# -- positives: at least two real-looking lines per category --------------------------------
POSITIVES = {
    "cuda_oom": [
        "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
        "of 79.15 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.08 GiB in use.",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 1 has a total capacity of "
        "23.64 GiB of which 3.12 MiB is free.",
        "RuntimeError: CUDA out of memory. Tried to allocate 512.00 MiB (GPU 0; 15.78 GiB total capacity; "
        "14.21 GiB already allocated; 301.19 MiB free; 14.50 GiB reserved in total by PyTorch)",
        "RuntimeError: CUDA error: out of memory",
        "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
        "4294967296 bytes.",
        "gpu-node07:51220:51290 [0] NCCL WARN Cuda failure 'out of memory'",
        "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor with "
        "shape[16,1,892800,8] and type float on /job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc",
        "  (0) Resource exhausted: OOM when allocating tensor with shape[16,112,112,147] and type float on "
        "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc",
        "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Failed to allocate request for 2.99GiB "
        "(3206250496B) on device ordinal 0",
        "RuntimeError: cuda runtime error (2) : out of memory at /pytorch/aten/src/THC/THCCachingAllocator.cpp:510",
    ],
    "slurm_oom": [
        "slurmstepd: error: Exceeded job memory limit",
        "slurmstepd: error: Job 1234 exceeded memory limit (1234 > 1000), being killed",
        "slurmstepd-vm: error: StepId=74.batch exceeded memory limit (203976704 > 104857600), being killed",
        "slurmstepd: error: Detected 1 oom-kill event(s) in step 1234.batch cgroup. Some of your processes may "
        "have been killed by the cgroup out-of-memory handler.",
        "slurmstepd-vm: error: Detected 1 oom-kill event(s) in StepId=49.batch. Some of your processes may have "
        "been killed by the cgroup out-of-memory handler.",
        "[2026-09-14T17:14:38.784] error: Detected 1 oom_kill event in StepId=22035606.1. Some of the step tasks "
        "have been OOM Killed.",
        "srun: error: gpu-node07: task 0: Out Of Memory",
    ],
    "dataloader_killed": [
        "RuntimeError: DataLoader worker (pid 12345) is killed by signal: Killed.",
        "RuntimeError: DataLoader worker (pid(s) 123, 124) exited unexpectedly",
        "ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared memory "
        "(shm).",
        "RuntimeError: DataLoader worker (pid 4567) is killed by signal: Bus error. It is possible that "
        "dataloader's workers are out of shared memory. Please try to raise your shared memory limit.",
        "RuntimeError: unable to write to file </torch_18692_1954506624>: No space left on device (28)",
    ],
    "memory_error": [
        "MemoryError",
        "numpy.core._exceptions._ArrayMemoryError: Unable to allocate 7.45 GiB for an array with shape "
        "(1000000, 1000) and data type float64",
        "RuntimeError: [enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: not enough memory: you "
        "tried to allocate 34359738368 bytes.",
        "OSError: [Errno 12] Cannot allocate memory",
        "MemoryError: Unable to allocate 201. GiB for an array with shape (2999, 2999, 2999) and data type int64",
    ],
    "cpp_bad_alloc": [
        "terminate called after throwing an instance of 'std::bad_alloc'",
        "  what():  std::bad_alloc",
    ],
    "gpu_ecc_xid": [
        "NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus",
        "NVRM: Xid (PCI:0000:86:00): 48, pid=5678, An uncorrectable double bit error (DBE) has been detected.",
        "RuntimeError: CUDA error: uncorrectable ECC error encountered",
        "Unable to determine the device handle for GPU 0000:3B:00.0: GPU is lost.  Reboot the system to recover",
        "NVRM: fallen off the bus and is not responding to commands.",
    ],
    "node_fail": [
        "slurmstepd: error: *** JOB 1234 ON gpu-node07 CANCELLED AT 2026-11-21T19:43:12 DUE TO NODE FAILURE, "
        "SEE SLURMCTLD LOG FOR DETAILS ***",
        "srun: error: Node failure on gpu-node07",
        "salloc: error: Node failure on worker-1",
        "Job 1234 ended in state NODE_FAIL",
    ],
    "no_gpu": [
        "RuntimeError: No CUDA GPUs are available",
        "AssertionError: Torch not compiled with CUDA enabled",
        "RuntimeError: CUDA error: no CUDA-capable device is detected",
        "RuntimeError: CUDA driver initialization failed, you might not have a CUDA gpu.",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
        "NVIDIA driver is installed and running.",
    ],
    "nccl_timeout": [
        "[rank1]:[E1121 19:43:12.123456 1234 ProcessGroupNCCL.cpp:616] [Rank 1] Watchdog caught collective "
        "operation timeout: WorkNCCL(SeqNum=4563, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) "
        "ran for 600034 milliseconds before timing out.",
        "[E ProcessGroupNCCL.cpp:475] [Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=1, "
        "OpType=BROADCAST, Timeout(ms)=1800000) ran for 1800127 milliseconds before timing out.",
        "RuntimeError: NCCL communicator was aborted on rank 3.",
        "[E ProcessGroupNCCL.cpp:455] Some NCCL operations have failed or timed out. Due to the asynchronous "
        "nature of CUDA kernels, subsequent GPU operations might run on corrupted/incomplete data.",
    ],
    "nccl_error": [
        "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:"
        "1970, unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.20.5",
        "ncclUnhandledCudaError: Call to CUDA function failed.",
        "ncclInternalError: Internal check failed.",
        "ncclSystemError: System call (e.g. socket, malloc) or external library call failed or device error.",
        "RuntimeError: NCCL Error 2: unhandled system error",
    ],
    "cuda_error": [
        "RuntimeError: CUDA error: an illegal memory access was encountered",
        "RuntimeError: CUDA error: device-side assert triggered",
        "../aten/src/ATen/native/cuda/Loss.cu:240: nll_loss_forward_reduce_cuda_kernel_2d: block: [0,0,0], "
        "thread: [5,0,0] Assertion `t >= 0 && t < n_classes` failed.",
        "RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR",
        "RuntimeError: CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle, opa, opb)`",
    ],
    "address_in_use": [
        "torch.distributed.DistNetworkError: The server socket has failed to listen on any local network address. "
        "The server socket has failed to bind to [::]:29500 (errno: 98 - Address already in use).",
        "[E socket.cpp:500] [c10d] The server socket has failed to listen on any local network address.",
        "OSError: [Errno 98] Address already in use",
        "Error: listen EADDRINUSE: address already in use :::8080",
    ],
    "distributed_rendezvous": [
        "torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError",
        "torch.distributed.elastic.rendezvous.api.RendezvousConnectionError: The connection to the C10d store "
        "has failed. See inner exception for details.",
        "torch.distributed.DistNetworkError: The client socket has timed out after 1800s while trying to connect "
        "to (gpu-node07, 29500).",
        "torch.distributed.DistStoreError: Timed out after 901 seconds waiting for clients. 1/2 clients joined.",
    ],
    "disk_quota": [
        "OSError: [Errno 122] Disk quota exceeded",
        "OSError: [Errno 28] No space left on device: '/tmp/tmpab12/ckpt.pt'",
        "cp: error writing '/home/alice/model.bin': Disk quota exceeded",
        "tar: ./data/shard-0003: Cannot write: No space left on device",
    ],
    "import_error": [
        "ModuleNotFoundError: No module named 'wandb'",
        "ImportError: cannot import name 'packaging' from 'pkg_resources' "
        "(/opt/conda/lib/python3.10/site-packages/pkg_resources/__init__.py)",
        "/usr/bin/python3: No module named run",
        "python3: No module named torch.distributed.run",
        "ImportError: No module named torch",
    ],
    "shared_library_error": [
        "ImportError: libcudnn.so.8: cannot open shared object file: No such file or directory",
        "python: error while loading shared libraries: libpython3.10.so.1.0: cannot open shared object file: "
        "No such file or directory",
        "ImportError: /lib64/libstdc++.so.6: version `GLIBCXX_3.4.29' not found (required by libtorch_python.so)",
        "./compiler_gym-llvm-service: /lib64/libc.so.6: version `GLIBC_2.25' not found (required by "
        "./compiler_gym-llvm-service)",
        "ImportError: /opt/conda/lib/python3.9/site-packages/_ext/_C.cpython-39-x86_64-linux-gnu.so: undefined "
        "symbol: _ZN3c106detail14torchCheckFailEPKcS2_jRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE",
        "python: symbol lookup error: /opt/conda/lib/libtorch_cuda.so: undefined symbol: ncclCommRegister",
    ],
    "command_not_found": [
        "/var/spool/slurmd/job00023/slurm_script: line 8: torchrun: command not found",
        "/var/spool/slurmd/job00023/slurm_script: line 3: conda: command not found",
        "slurmstepd: error: execve(): torchrun: No such file or directory",
        "CommandNotFoundError: Your shell has not been properly configured to use 'conda activate'.",
        "ModuleCmd_Load.c(213):ERROR:105: Unable to locate a modulefile for 'cuda/12.1'",
        "Lmod has detected the following error: The following module(s) are unknown: \"cuda/99\"",
        "/bin/sh: 1: python: not found",
        "/usr/bin/env: 'python': No such file or directory",
    ],
    "file_not_found": [
        "FileNotFoundError: [Errno 2] No such file or directory: '/scratch/alice/data/train.parquet'",
        "/var/spool/slurmd/job00023/slurm_script: line 5: /home/alice/venv/bin/activate: No such file or "
        "directory",
        "python: can't open file '/home/alice/project/train.py': [Errno 2] No such file or directory",
        "ValueError: File not found: filepath=/scratch/alice/model.keras. Please ensure the file is an "
        "accessible `.keras` zip file.",
        "OSError: No file or directory found at spiral_keras_model.h5",
    ],
    "stale_file_handle": [
        "OSError: [Errno 116] Stale file handle: '/home/alice/.cache/huggingface/datasets/cache-1.arrow'",
        "bash: cd: /scratch/alice/run3: Stale file handle",
        "cp: cannot stat '/nfs/data/x.bin': Stale file handle",
    ],
    "too_many_open_files": [
        "OSError: [Errno 24] Too many open files",
        "RuntimeError: Too many open files. Communication with the workers is no longer possible. Please increase "
        "the limit using `ulimit -n` in the shell or change the sharing strategy",
        "OSError: [Errno 24] Too many open files: '/scratch/alice/shards/00042.tar'",
    ],
    "network_unreachable": [
        "OSError: We couldn't connect to 'https://huggingface.co' to load this file, couldn't find it in the cached "
        "files and it looks like bert-base-uncased is not the path to a directory containing a file named config.json.",
        "OSError: [Errno 101] Network is unreachable",
        "socket.gaierror: [Errno -3] Temporary failure in name resolution",
        "urllib3.exceptions.MaxRetryError: HTTPSConnectionPool(host='api.wandb.ai', port=443): Max retries exceeded "
        "with url: /graphql (Caused by NameResolutionError(\"<urllib3.connection.HTTPSConnection object at "
        "0x7f>: Failed to resolve 'api.wandb.ai' ([Errno -2] Name or service not known)\"))",
        "wandb: ERROR Run initialization has timed out after 90.0 sec.",
        "ConnectionError: Couldn't reach 'allenai/c4' on the Hub (ConnectionError)",
    ],
    "cuda_driver_mismatch": [
        "RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA runtime version",
        "RuntimeError: cuda runtime error (35) : CUDA driver version is insufficient for CUDA runtime version at "
        "/opt/conda/conda-bld/pytorch_1524586445097/work/aten/src/THC/THCGeneral.cpp:70",
        "CUDA error: 35 (0x23) cudaErrorInsufficientDriver : CUDA driver version is insufficient for CUDA runtime "
        "version",
        "RuntimeError: The NVIDIA driver on your system is too old (found version 10010). Please update your GPU "
        "driver by downloading and installing a new version from the URL: http://www.nvidia.com/Download/index.aspx",
        "RuntimeError: CUDA error: forward compatibility was attempted on non supported HW",
    ],
    "cuda_arch_mismatch": [
        "RuntimeError: CUDA error: no kernel image is available for execution on the device",
        "NVIDIA A100-PCIE-40GB with CUDA capability sm_80 is not compatible with the current PyTorch installation.",
        "THCudaCheck FAIL file=/pytorch/aten/src/THC/generic/THCTensorMath.cu line=16 error=48 : no kernel image is "
        "available for execution on the device",
        "RuntimeError: CUDA error: invalid device function",
    ],
    "checkpoint_corrupt": [
        "RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory",
        "_pickle.UnpicklingError: invalid load key, '<'.",
        "safetensors_rust.SafetensorError: Error while deserializing header: MetadataIncompleteBuffer",
        "zipfile.BadZipFile: File is not a zip file",
        "EOFError: Ran out of input",
    ],
    "preempted": [
        "slurmstepd: error: *** JOB 77 ON gpu-node07 CANCELLED AT 2026-11-21T19:43:12 DUE TO PREEMPTION ***",
        "slurmstepd: error: *** STEP 77.0 ON gpu-node07 CANCELLED AT 2026-11-21T19:43:12 DUE TO PREEMPTION ***",
        "Job 1234 ended in state PREEMPTED",
    ],
    "permission_denied": [
        "PermissionError: [Errno 13] Permission denied: '/data/shared/checkpoints/run1'",
        "bash: ./x: Permission denied",
        "/var/spool/slurmd/job00023/slurm_script: line 4: ./train.sh: Permission denied",
    ],
    "nan_loss": [
        "loss is nan, stopping training",
        "Epoch 3 | step 1200 | Loss: nan | lr 3.0e-04",
        "{'loss': nan, 'grad_norm': nan, 'learning_rate': 1e-05, 'epoch': 0.5}",
        "RuntimeError: Function 'LogSoftmaxBackward0' returned nan values in its 0th output.",
        "FloatingPointError: Minimum loss scale reached (0.0001). Your loss is probably exploding.",
        "RuntimeError: NaN or Inf found in input tensor.",
        "WARNING: Detected NaN in gradients at step 1200, aborting",
        "Epoch 1: Iter 1: Val loss nan, Val took 0.002s",
        "2024-05-01 10:00:00.123 | INFO     | __main__:train:88 - epoch 3 | loss nan | lr 1.0e-04",
        "| epoch 003 | loss | nan | ppl | inf |",
        " iteration     5426/  250000 | learning rate: 2.999E-04 | loss scale: 1.0 | grad norm: nan | number of "
        "skipped iterations:   0 | number of nan iterations:   0 |",
    ],
    "slurm_timeout": [
        "slurmstepd: error: *** JOB 23 ON vm CANCELLED AT 2026-11-21T19:43:12 DUE TO TIME LIMIT ***",
        "slurmstepd-vm: error: *** STEP 1234.0 ON gpu-node07 CANCELLED AT 2026-11-21T19:43:12 DUE TO TIME LIMIT "
        "***",
    ],
    "mpi_abort": [
        "MPI_ABORT was invoked on rank 0 in communicator MPI_COMM_WORLD",
        "application called MPI_Abort(MPI_COMM_WORLD, 1) - process 0",
        "*** MPI_ERRORS_ARE_FATAL (processes in this communicator will now abort,",
    ],
    "killed_signal": [
        "Killed",
        "/var/spool/slurmd/job00023/slurm_script: line 12: 48213 Killed                  python train.py",
        "c++: fatal error: Killed signal terminated program cc1plus",
        "srun: error: gpu-node07: task 3: Killed",
        "subprocess.CalledProcessError: Command '['python', 'x.py']' returned non-zero exit status 137.",
        "E1121 19:41:15.337000 140231 api.py:869] failed (exitcode: -9) local_rank: 0 (pid: 1234) of binary: "
        "/usr/bin/python3",
    ],
    "segfault": [
        "Segmentation fault (core dumped)",
        "Fatal Python error: Segmentation fault",
        "/var/spool/slurmd/job00023/slurm_script: line 12: 48213 Segmentation fault      (core dumped) python x.py",
        "Caught signal 11 (SIGSEGV) in thread 0x7f3b2c1e2446",
    ],
    "bus_error": [
        "Bus error (core dumped)",
        "/var/spool/slurmd/job00023/slurm_script: line 7: 1234 Bus error               (core dumped) python x.py",
        "Fatal Python error: Bus error",
    ],
    "illegal_instruction": [
        "Illegal instruction (core dumped)",
        "/var/spool/slurmd/job00023/slurm_script: line 9: 2345 Illegal instruction     (core dumped) ./simulate",
        "Fatal Python error: Illegal instruction",
    ],
    "python_traceback": [
        "Traceback (most recent call last):",
        "Fatal Python error: Aborted",
    ],
    "slurm_cancelled": [
        "slurmstepd: error: *** JOB 50 ON vm CANCELLED AT 2026-11-21T19:43:12 ***",
        "slurmstepd: error: *** STEP 1234.0 ON gpu-node07 CANCELLED AT 2026-11-21T19:43:12 ***",
    ],
}

BAR = "Epoch 1:  45%|████▌     | 450/1000 [01:02<01:16, 7.20it/s, loss=0.312]"
# How real logs dress a line: launcher and logger prefixes, colours, a progress bar it was glued to.
DECORATIONS: List[Tuple[str, Callable[[str], str]]] = [
    ("plain", lambda s: s),
    ("rank", lambda s: f"[rank3]: {s}"),
    ("rank_no_space", lambda s: f"[rank3]:{s}"),
    ("torchrun_tee", lambda s: f"[default0]:{s}"),
    ("srun_label", lambda s: f"0: {s}"),
    ("host", lambda s: f"gpu-node07: {s}"),
    ("mpirun_tag", lambda s: f"[1,0]<stderr>:{s}"),
    ("timestamp", lambda s: f"2026-11-21 19:43:12,123 {s}"),
    ("bracket_timestamp", lambda s: f"[2026-11-21T19:43:12.784] {s}"),
    ("ansi", lambda s: f"\x1b[1;31m{s}\x1b[0m"),
    ("bar_then_cr", lambda s: f"{BAR}\r{s}"),
    ("bar_glued", lambda s: f"{BAR}{s}"),
    ("bar_no_rate", lambda s: f"Epoch 1:  45%|████▌  | 450/1000 [01:02<01:16]{s}"),
    ("newline", lambda s: f"{s}\r\n"),
    ("everything", lambda s: f"\x1b[2K{BAR}\r0: [rank1]: \x1b[31m{s}\x1b[0m\n"),
]

POSITIVE_CASES = [(cat, line) for cat, lines in POSITIVES.items() for line in lines]


def test_every_required_id_has_two_positive_lines():
    assert sorted(cat for cat in REQUIRED_IDS if len(POSITIVES.get(cat, [])) < 2) == []


@pytest.mark.parametrize("decoration", [name for name, _ in DECORATIONS])
@pytest.mark.parametrize("expected, line", POSITIVE_CASES)
def test_positive_line_is_classified_whatever_its_dressing(library, expected, line, decoration):
    dress = dict(DECORATIONS)[decoration]
    assert category_of(dress(line), library) == expected


# -- harmless look-alikes: nothing may match ------------------------------------------------
HARMLESS = [
    "/opt/conda/lib/python3.10/site-packages/torch/utils/data/dataloader.py:558: UserWarning: This DataLoader "
    "will create 16 worker processes in total. Our suggested max number of worker in current system is 8.",
    "  warnings.warn(_create_warning_msg(",
    "/opt/conda/lib/python3.10/site-packages/torch/nn/modules/conv.py:456: UserWarning: Plan failed with a "
    "cudnnException: CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: cudnnFinalize Descriptor Failed cudnn_status: "
    "CUDNN_STATUS_NOT_SUPPORTED (Triggered internally at ../aten/src/ATen/native/cudnn/Conv_v8.cpp:919.)",
    "/opt/conda/lib/python3.10/site-packages/torchvision/io/image.py:13: UserWarning: Failed to load image "
    "Python extension: 'libc10_cuda.so: cannot open shared object file: No such file or directory'",
    "/opt/conda/lib/python3.10/site-packages/torch/cuda/__init__.py:128: UserWarning: CUDA initialization: Found "
    "no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver",
    "FutureWarning: `torch.cuda.amp.GradScaler(args...)` is deprecated. Please use "
    "`torch.amp.GradScaler('cuda', args...)` instead.",
    "gpu-node07:1234:1234 [0] NCCL INFO Channel 00/02 :    0   1",
    "gpu-node07:1234:1234 [0] NCCL INFO NET/Socket : Using [0]eth0:10.0.0.1<0>",
    "gpu-node07:1234:1234 [0] NCCL INFO NET/Plugin : dlerror=libnccl-net.so: cannot open shared object file: "
    "No such file or directory No plugin found (libnccl-net.so), using internal implementation",
    "gpu-node07:1234:1290 [0] NCCL INFO Call to connect returned Connection refused, retrying",
    "gpu-node07:1234:1290 [0] NCCL INFO NCCL_ASYNC_ERROR_HANDLING set by environment to 1 (NCCL error "
    "handling enabled)",
    "gpu-node07:1234:1290 [0] NCCL INFO transport/net_socket.cc:451 -> 6 ncclSystemError: retry 1",
    "NCCL version 2.18.1+cuda12.1",
    "error_rate=0.01",
    "val_error: 0.123",
    "0 errors",
    "Errors: 0",
    '  File "/opt/conda/lib/python3.10/site-packages/torch/distributed/elastic/multiprocessing/errors/'
    'error_handler.py", line 73, in record_exception',
    "Warning: memory usage is high (85%)",
    "Running: python train.py --cuda-oom-retry 3 --batch-size 64",
    "Namespace(batch_size=32, cuda_oom_retry=3, lr=0.001)",
    "step 1200 | loss=0.0312 nan_count=0 | lr=3e-4",
    "oom_score_adj: 0",
    "  oom_kill_disable: false",
    "Using cuda:0",
    "Using memory_efficient_attention from xformers",
    "INFO oom_guard: caught torch.cuda.OutOfMemoryError at batch_size=64, halved to 32 and recovered",
    "WARNING oom_guard: CUDA out of memory at batch_size=64, retrying with batch_size=32",
    BAR,
    "Validating: 100%|██████████| 50/50 [00:05<00:00,  9.87it/s]",
    "\rEpoch 0:   0%|          | 0/1000 [00:00<?, ?it/s]\rEpoch 0:   1%|          | 10/1000 [00:01<02:10, 7.60it/s]",
    "[rank0]:[W1121 19:43:12.123456 1234 ProcessGroupNCCL.cpp:1250] Warning: WARNING: process group has NOT been "
    "destroyed before we destruct ProcessGroupNCCL. On normal program exit, the application should call "
    "destroy_process_group to ensure that any pending NCCL operations have finished in this process.",
    "[W socket.cpp:697] [c10d] The client socket has failed to connect to [localhost]:29500 (errno: 97 - Address "
    "family not supported by protocol).",
    "[W socket.cpp:464] [c10d] The server socket has failed to bind to [::]:29500 (errno: 98 - Address already "
    "in use).",
    "Gradient overflow.  Skipping step, loss scaler 0 reducing loss scale to 32768.0",
    "[2026-11-21 19:43:12,123] torch.distributed.run: [WARNING] Setting OMP_NUM_THREADS environment variable for "
    "each process to be 1 in default, to avoid your system being overloaded",
    "wandb: Network error (ReadTimeout), entering retry loop.",
    "wandb: Network error (ConnectTimeout), entering retry loop.",
    # an out-of-memory the program caught, logged at WARNING, and skipped the batch of
    "| WARNING: ran out of memory with exception: CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 15.75 "
    "GiB total capacity; 11.71 GiB already allocated; 584.94 MiB free; 2.38 GiB cached);",
    "| WARNING: ran out of memory on GPU #2, skipping batch",
    "2026-11-21 19:43:12 | WARNING | fairseq.trainer | OOM: Ran out of memory with exception: CUDA out of memory, "
    "skipping batch",
    # TensorFlow's OOM on the host allocator is not a GPU out-of-memory
    "ResourceExhaustedError: OOM when allocating tensor with shape[2048,2048] and type float on "
    "/job:localhost/replica:0/task:0/device:CPU:0 by allocator cpu",
    # older Slurm counts page cache: printed for jobs that complete
    "slurmstepd: error: Exceeded step memory limit at some point.",
    "slurmstepd: error: Exceeded job memory limit at some point. Step may have been partially swapped out to disk.",
    # TensorFlow probing optional libraries, xformers probing triton: warnings of runs that go on
    "2023-02-20 11:35:53.200200: W tensorflow/stream_executor/platform/default/dso_loader.cc:64] Could not load "
    "dynamic library 'libnvinfer.so.7'; dlerror: libnvinfer.so.7: cannot open shared object file: No such file or "
    "directory; LD_LIBRARY_PATH: /usr/local/cuda/lib64",
    "A matching Triton is not available, some optimizations will not be enabled.",
    "Error caught was: No module named 'triton'",
    # a native backtrace frame names a function, not an error
    "./bladebit_cuda(_Z17CudaFatalCheckMsg9cudaErrorPKcz+0x11f)[0x55e98c72146f]",
    "TensorBoard caught SIGTERM; exiting...",
    "Checkpoint file not found, starting from scratch",
    "step 10 | loss_scale 65536.0 | loss 2.31",
    "Loss information will be logged every 10 steps",
    " iteration     5426/  250000 | loss scale: 1.0 | grad norm: 0.532 | number of skipped iterations:   0 | number "
    "of nan iterations:   0 |",
    "Killed 0 stale processes",
    "No NaN detected in gradients",
    "torch.cuda.is_available(): True",
    # srun only repeats the exit code, which Slurm's accounting already reports: deliberately not a finding.
    "srun: error: gpu-node07: task 0: Exited with exit code 1",
    "\x1b[0m",
    "",
    "\r\r\r",
]


@pytest.mark.parametrize("decoration", [name for name, _ in DECORATIONS])
@pytest.mark.parametrize("line", HARMLESS)
def test_harmless_line_matches_nothing(library, line, decoration):
    dress = dict(DECORATIONS)[decoration]
    assert category_of(dress(line), library) is None


# -- one line, several candidates: the more specific pattern wins --------------------------
@pytest.mark.parametrize("line, expected", [
    ("RuntimeError: CUDA error: out of memory", "cuda_oom"),
    ("RuntimeError: CUDA error: no CUDA-capable device is detected", "no_gpu"),
    ("RuntimeError: CUDA error: uncorrectable ECC error encountered", "gpu_ecc_xid"),
    ("ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared memory "
     "(shm).", "dataloader_killed"),
    ("RuntimeError: DataLoader worker (pid 12345) is killed by signal: Killed.", "dataloader_killed"),
    ("ImportError: libcudnn.so.8: cannot open shared object file: No such file or directory", "shared_library_error"),
    ("RuntimeError: CUDA error: CUDA driver version is insufficient for CUDA runtime version", "cuda_driver_mismatch"),
    ("RuntimeError: CUDA error: no kernel image is available for execution on the device", "cuda_arch_mismatch"),
    ("RuntimeError: unable to open shared memory object </torch_30997_2076642173> in read-write mode: Too many "
     "open files (24)", "too_many_open_files"),
    ("slurmstepd: error: *** JOB 77 ON vm CANCELLED AT 2026-11-21T19:43:12 DUE TO PREEMPTION ***", "preempted"),
    ("slurmstepd: error: execve(): python: No such file or directory", "command_not_found"),
    ("OSError: [Errno 116] Stale file handle: '/nfs/x'", "stale_file_handle"),
    ("tensorflow.python.framework.errors_impl.ResourceExhaustedError: disk quota exceeded [Op:SaveV2]",
     "disk_quota"),
    ("OSError: [Errno 28] No space left on device: '/scratch/x'", "disk_quota"),
    ("torch.distributed.DistNetworkError: The server socket has failed to listen on any local network address. "
     "(errno: 98 - Address already in use).", "address_in_use"),
    ("Fatal Python error: Segmentation fault", "segfault"),
    ("slurmstepd: error: *** JOB 23 ON vm CANCELLED AT 2026-11-21T19:43:12 DUE TO TIME LIMIT ***",
     "slurm_timeout"),
    ("slurmstepd: error: *** JOB 23 ON vm CANCELLED AT 2026-11-21T19:43:12 DUE TO NODE FAILURE ***", "node_fail"),
    ("torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error, "
     "Last error: Cuda failure 'out of memory'", "cuda_oom"),
    ("RuntimeError: NCCL communicator was aborted on rank 3. Original reason for failure was: NCCL error",
     "nccl_timeout"),
    ("srun: error: gpu-node07: task 0: Out Of Memory", "slurm_oom"),
])
def test_specific_pattern_wins_on_a_line(library, line, expected):
    assert category_of(line, library) == expected


# -- whole logs ------------------------------------------------------------------------------
def test_cuda_oom_traceback_puts_cuda_oom_first(library):
    log = [
        "Traceback (most recent call last):",
        '  File "train.py", line 88, in <module>',
        "    loss.backward()",
        "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB.",
    ]
    assert analyze(log, library).categories == ("cuda_oom", "python_traceback")


def test_oom_killed_job_puts_slurm_oom_first(library):
    log = [
        "/var/spool/slurmd/job00074/slurm_script: line 14: 2283417 Killed    python preprocess.py",
        "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=74.batch cgroup. Some of your processes may "
        "have been killed by the cgroup out-of-memory handler.",
    ]
    analysis = analyze(log, library)
    assert analysis.categories == ("slurm_oom", "killed_signal")
    assert analysis.root_cause is not None and analysis.root_cause.line_no == 2


FIXTURES = {
    "ddp_cuda_oom.log": (("cuda_oom", "python_traceback"), "torch.OutOfMemoryError: CUDA out of memory"),
    "nccl_watchdog_timeout.log": (
        ("nccl_timeout", "nccl_error", "slurm_cancelled"), "Watchdog caught collective operation timeout"),
    "cgroup_oom_kill.log": (("slurm_oom", "killed_signal"), "Detected 1 oom-kill event(s)"),
    "clean_training_run.log": ((), None),
    "dataloader_shm_bus_error.log": (("dataloader_killed", "python_traceback"), "Unexpected bus error"),
    "missing_module.log": (("import_error", "python_traceback"), "No module named 'peft'"),
}


def test_every_fixture_is_listed():
    assert sorted(p.name for p in LOG_FIXTURES.glob("*.log")) == sorted(FIXTURES)


@pytest.mark.parametrize("split", ["newlines_only", "splitlines"])
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_log(library, name, split):
    text = (LOG_FIXTURES / name).read_text(encoding="utf-8")
    # jobmon's log reader uses splitlines(), which also splits at the bars' carriage returns.
    lines = text.split("\n") if split == "newlines_only" else text.splitlines()
    expected_categories, root_text = FIXTURES[name]
    analysis = analyze(lines, library)
    assert analysis.categories == expected_categories
    if root_text is None:
        assert analysis.findings == ()
    else:
        assert analysis.root_cause is not None and root_text in analysis.root_cause.line


def test_memory_kill_next_to_cancelled_banner_is_a_memory_kill(library):
    log = [
        "slurmstepd: error: Job 42664148 exceeded memory limit (10889240 > 4194304), being killed",
        "slurmstepd: error: Exceeded job memory limit",
        "slurmstepd: error: *** JOB 42664148 ON cn3152 CANCELLED AT 2017-06-06T00:11:58 ***",
    ]
    assert analyze(log, library).categories == ("slurm_oom", "slurm_cancelled")


def test_dataloader_bus_error_outranks_the_traceback_that_follows(library):
    log = [
        "ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared memory (shm).",
        "Traceback (most recent call last):",
        '  File "train.py", line 52, in <module>',
        "RuntimeError: DataLoader worker (pid 325) is killed by signal: Bus error.",
        "During handling of the above exception, another exception occurred:",
        "Traceback (most recent call last):",
        "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/pymp-3k2j/listener-1'",
    ]
    analysis = analyze(log, library)
    assert analysis.categories[0] == "dataloader_killed"
    assert analysis.root_cause is not None and analysis.root_cause.line_no == 1


def test_a_timeout_is_the_time_limit_even_when_a_watchdog_timeout_follows_the_kill(library):
    log = [
        "slurmstepd: error: *** JOB 494583 ON n1 CANCELLED AT 2024-04-20T09:09:37 DUE TO TIME LIMIT ***",
        "0: [rank0]:[E1121 18:12:11.553902 88190 ProcessGroupNCCL.cpp:616] [Rank 0] Watchdog caught collective "
        "operation timeout: WorkNCCL(SeqNum=48211, OpType=ALLREDUCE) ran for 600014 milliseconds before timing out.",
    ]
    assert analyze(log, library, outcome=JobEnd("TIMEOUT")).categories == ("slurm_timeout", "nccl_timeout")
    # the banner lost (a log cut short): Slurm's state still names the cause
    analysis = analyze(log[1:], library, outcome=JobEnd("TIMEOUT", 0, 15))
    assert analysis.categories == ("slurm_timeout", "nccl_timeout")
    assert analysis.root_cause is not None and analysis.root_cause.line_no == 0


def test_out_of_memory_next_to_a_cancelled_banner_is_a_memory_kill_not_a_cancellation(library):
    log = ["Epoch 0 |   Training | Elapsed Time: 0:00:15 | Steps: 93 | Loss: 24.580695",
           "slurmstepd: error: *** JOB 7518 ON xantipa CANCELLED AT 2022-06-10T17:11:35 ***"]
    assert analyze(log, library, outcome=JobEnd("OUT_OF_MEMORY")).categories == ("slurm_oom", "slurm_cancelled")
    assert analyze(log, library, outcome=JobEnd("CANCELLED")).categories == ("slurm_cancelled",)


def test_a_completed_run_with_a_nan_loss_has_it_as_a_warning_not_a_cause(library):
    log = ["2022-02-09 20:28:32,418 - mmdet - INFO - Epoch [1][658/742]     lr: 5.000e-05, eta: 2:15:01, "
           "time: 0.396, data_time: 0.159, memory: 4127, loss_cls: nan, loss_bbox: nan, loss: nan"]
    assert analyze(log, library).categories == ("nan_loss",)
    analysis = analyze(log, library, outcome=JobEnd("COMPLETED", 0, 0))
    assert analysis.categories == () and [f.category for f in analysis.warnings] == ["nan_loss"]


def test_successful_run_with_caught_oom_and_step_memory_warning_is_clean(library):
    log = [
        "| WARNING: ran out of memory with exception: CUDA out of memory. Tried to allocate 1.50 GiB (GPU 0; 15.75 "
        "GiB total capacity; 11.71 GiB already allocated; 584.94 MiB free; 2.38 GiB cached);",
        " Skipping batch",
        "epoch 010 | loss 2.31 | ppl 4.96",
        "slurmstepd: error: Exceeded step memory limit at some point.",
    ]
    analysis = analyze(log, library)
    assert analysis.findings == ()
    assert [(f.line_no, f.category) for f in analysis.warnings] == [(1, "cuda_oom"), (4, "slurm_oom")]
