"""ddp.py: many processes, one per GPU, under torchrun: PyTorch's DistributedDataParallel all-reduces the gradients of
what trains. With LoRA-SP only the trainable entries are Parameters (lorasp.py packs them), so the all-reduce carries
exactly keep x LoRA's bytes; a comm hook counts them, and a checksum checks that every rank drew the same masks.

    torchrun --nproc_per_node=N train.py --model ... --data ...     # NCCL on CUDA, gloo on CPU

train.py calls setup_ddp once, wraps its model with wrap_ddp, and sums its loss and token counts over the ranks
itself; a classifier's classify and a span head's span_logits reach the model through DDP's forward too. Leaves
out: FSDP, tensor parallelism, several GPUs per process.
"""
import atexit
import functools
import inspect
import os
import sys
import zlib

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def setup_ddp(args):
    """Under torchrun (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT set): join the process group, NCCL on CUDA
    (one GPU per process), gloo on CPU; only rank 0 prints. A plain `python train.py` makes no process group."""
    if "RANK" not in os.environ or dist.is_initialized():
        return
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(args.device)
    dist.init_process_group("nccl" if cuda else "gloo", device_id=torch.device(args.device) if cuda else None)
    atexit.register(dist.destroy_process_group)
    if dist.get_rank() > 0:
        sys.stdout = open(os.devnull, "w")


def rank_world():
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def barrier():
    if dist.is_initialized():
        dist.barrier()


def gathered(t, device):
    """[rank 0's t, rank 1's, ...] on every rank, for a tensor of one shape on all of them; without DDP [t]."""
    if not dist.is_initialized():
        return [t]
    parts = [torch.empty_like(t, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.to(device))
    return [p.to(t.device) for p in parts]


def planned_memory(available, where, device):
    """DDP: (the bytes each rank may plan for, where that figure comes from), the same on every rank. On CPU the
    processes of one machine (torchrun's LOCAL_WORLD_SIZE) share its memory; then the least over the ranks is taken,
    so that every rank's --quant/--checkpointing auto makes the same choice (other base weights on one rank would be
    trained against the others' without an error). Without DDP: as given."""
    if not dist.is_initialized():
        return available, where
    device, world = torch.device(device), dist.get_world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if device.type == "cpu" else 1
    unknown = 1 << 62                                          # a rank that cannot read its memory yields to the rest
    t = torch.tensor([unknown if available is None else available // local], device=device)
    dist.all_reduce(t, dist.ReduceOp.MIN)
    if int(t) == unknown:
        return None, where
    where = where if available is not None else "what the other processes could read"
    return int(t), where + (f", shared by the {local} processes on this machine" if local > 1 else "") + \
        f"; the least over {world} processes"


class Entries(torch.nn.Module):
    """What DDP wraps: forward(..., entry=) calls the model's entry point of that name. DDP readies its gradient
    all-reduce in its own forward only, so a classifier's classify and a span head's span_logits go through it too."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, entry="forward", **kwargs):
        return getattr(self.model, entry)(*args, **kwargs)


def wrap_ddp(model, device, sent):
    """DDP over the trainable Parameters: LoRA-SP's packed entries, so the all-reduce is keep x LoRA's. The comm hook
    sums the gradient buckets (the step divides by the global token count) and adds their bytes to sent[0]. The masks
    agree by construction (seeded per layer), which a checksum checks here; buffers are not re-sent in forward."""
    crc = 0
    for name, b in model.named_buffers():
        if name.endswith(("mask_A", "mask_B", "cols")):
            crc = zlib.crc32(b.cpu().numpy().tobytes(), crc)
    t = torch.tensor([crc, -crc], device=device)
    dist.all_reduce(t, dist.ReduceOp.MAX)                      # (max crc, -min crc)
    if t[0] != -t[1]:
        raise RuntimeError("the LoRA-SP masks differ between ranks: run the same code and flags on every rank")

    def allreduce_sum(sent, bucket):
        sent[0] += bucket.buffer().nbytes
        return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda f: f.value()[0])
    flag = "forward_sync_buffers"                              # torch < 2.13: broadcast_buffers
    flag = flag if flag in inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers"
    net = DistributedDataParallel(Entries(model), **{flag: False})  # buffers never change: none sent in forward
    net.register_comm_hook(sent, allreduce_sum)
    for entry in ("classify", "span_logits"):                  # net.classify(...): the model's, through DDP's forward
        if hasattr(model, entry):
            setattr(net, entry, functools.partial(net, entry=entry))
    return net

