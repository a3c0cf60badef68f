"""The shipped checkpoint's logits, bit for bit: a refactor of the network, its loading or its batch-norm
folding must not change a single output value.

The digests were recorded by this very computation on the code that trained and shipped the model; they
hold for the CPU kernels of this machine and its torch version, with one intra-op thread (a different
thread count may sum in another order).
"""
from __future__ import annotations

import hashlib

import pytest
import torch

from drnet_core.net.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from drnet_core.data.datasets import load_shipped_subset, to_model_input
from drnet_core.analysis.evaluate import default_setting

# (fold_batch_norms, threshold: None for the checkpoint's default) -> sha256 of the float32 logits of the
# shipped subset's first 64 images at the checkpoint's default tau.
RECORDED = {
    (False, None): "b36f24604a09fc0421c89cfb5827403a37bfadd731023a7b8a70542363a801e8",
    (False, 0.0): "2d2baa8a77e9b4b094c9b54358a98ecc0d7760c8e9ac31ddbc1e79c9107455af",
    (True, None): "be1b47a833f2b7b02d8292ecfc8c8da59098f26c8f7156b5a80125e56477bb8d",
    (True, 0.0): "ab919d886019c77b0ee5693ea681b715df6af93604703eec030f66f051b81218",
}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("fold, threshold", list(RECORDED))
def test_shipped_logits_are_bit_identical_to_the_recorded_ones(one_thread, fold, threshold):
    model, meta = load_checkpoint(SHIPPED_CHECKPOINT, fold_batch_norms=fold)
    tau, default_threshold = default_setting(meta)
    inputs = to_model_input(load_shipped_subset().images[:64])
    with torch.no_grad():
        logits, _ = model(inputs, tau=tau, threshold=default_threshold if threshold is None else threshold)
    digest = hashlib.sha256(logits.contiguous().numpy().tobytes()).hexdigest()
    assert digest == RECORDED[fold, threshold]
