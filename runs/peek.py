"""Held-out figures of a run's resume file (for notes): dense and routed at a few settings."""
import sys, torch
from drnet_core.net.config import ModelConfig
from drnet_core.training.config import TrainConfig
from drnet_core.net.model import DRNet
from drnet_core.data.datasets import load_split, to_model_input
from drnet_core.data.held_out import split_train_val
from drnet_core.analysis.evaluate import run_routed
torch.set_num_threads(1)
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
model = DRNet(ModelConfig.from_dict(state["model_config"])); model.load_state_dict(state["model"]); model.eval()
tc = TrainConfig.from_dict(state["train_config"])
full = load_split("fashion-mnist", "train"); _, val = split_train_val(full, tc.val_size, tc.seed)
x, y = to_model_input(full.images[val]), full.labels[val]
print("epoch", state["epoch"])
with torch.no_grad():
    for tau in (1.0,):
        for thr in (0.0, 0.2, 0.5, 1.0):
            r = run_routed(model, x, y, tau=tau, threshold=thr)
            print(f"tau {tau} thr {thr}: acc {float(r.correct.float().mean()):.4f} mflops {float(r.mflops.mean()):.2f}")
