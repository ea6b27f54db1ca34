"""Train the bundled demo checkpoint: PS-ResNet (digits) on scikit-learn's digits.

    python models/train_digits.py [--epochs 12] [--out models/ps_resnet_digits.pth]

Trains exactly as the release does: the masked blocks of each PSConv's dense conv
are zeroed at init and kept zero during training, so the checkpoint is clean and
deploys at 1.0x. Saved as {"state_dict": ..., "meta": ...} (a common wrapper).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from psdeploy.arch.psconv import PSGConv2d, released_init_mask
from psdeploy.arch.registry import build, get_config
from psdeploy.demo_data import digits_split, top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="ps_resnet_digits")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="models/ps_resnet_digits.pth")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    x_tr, y_tr, x_te, y_te = digits_split()
    model = build(get_config(args.arch)).train()
    masks = [(m.conv.weight, released_init_mask(m)) for m in model.modules() if isinstance(m, PSGConv2d)]
    with torch.no_grad():
        for weight, mask in masks:
            weight[mask] = 0.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(len(x_tr) / 64))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=args.epochs * steps_per_epoch)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    for epoch in range(args.epochs):
        start = time.time()
        order = torch.randperm(len(xt))
        model.train()
        for i in range(0, len(xt), 64):
            idx = order[i:i + 64]
            batch = xt[idx]
            shift = torch.randint(-2, 3, (2,))  # small translations
            batch = torch.roll(batch, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = F.cross_entropy(model(batch), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():  # the release's gradient hook, applied as a projection
                for weight, mask in masks:
                    weight[mask] = 0.0
        model.eval()
        with torch.no_grad():
            acc = top1(model(torch.from_numpy(x_te)).numpy(), y_te)
        print(f"epoch {epoch + 1:2d}  loss {loss.item():.4f}  held-out top-1 {acc:.4f}  {time.time() - start:.1f}s")
    meta = {"arch": args.arch, "dataset": "sklearn digits 32x32", "epochs": args.epochs, "seed": args.seed,
            "held_out_top1": acc}
    tmp = args.out + ".tmp"
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)
    os.replace(tmp, args.out)
    print(f"saved {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
