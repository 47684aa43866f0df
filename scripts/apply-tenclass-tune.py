"""Write the ten-class configs' validation-chosen settings (docs/tune/<task>/<method>/tune.json, made
by scripts/tune-tenclass-configs.sh) into src/localstdp/configs/<task>.toml: train.lr, backprop.lr and
the [methods.*] tables, with the searched grids in comments, plus [evaluation] and [frontier]."""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = {"digits": "digits.toml", "mnist-10": "mnist-10.toml", "fashion-mnist": "fashion-mnist.toml"}


def chosen(task, method):
    r = json.loads((ROOT / "docs/tune" / task / method / "tune.json").read_text())
    key = next(iter(r["grid"]))
    grid = "{" + ", ".join(f"{v:g}" for v in r["grid"][key]) + "}"
    return r["chosen"][key], grid, r["chosen_mean"], len(r["seeds"])


for task in sys.argv[1:] or FILES:
    path = ROOT / "src/localstdp/configs" / FILES[task]
    text = path.read_text().split("\n[methods.")[0].split("\n[evaluation]")[0].rstrip() + "\n"
    lr, g, v, n = chosen(task, "local")
    text = re.sub(r"(?m)^lr = [0-9.e-]+ .*# the local rule's learning rate \(eta\).*$",
                  f"lr = {lr:g}          # the local rule's eta, chosen on validation over {g} ({v:.3f}, {n} seed(s))",
                  text)
    blr, bg, bv, _ = chosen(task, "backprop")
    text = re.sub(r"(?ms)(\[backprop\].*?^lr = )[0-9.e-]+.*?$",
                  lambda m: m.group(1) + f"{blr:g}        # plain backprop, chosen on validation over {bg} ({bv:.3f})",
                  text)
    wd, wg, wv, _ = chosen(task, "backprop-wd")
    el, eg, ev, _ = chosen(task, "backprop-es")
    ml, mg, mv, _ = chosen(task, "backprop-mse")
    text += (f"\n# The panel's variants, chosen on validation with the same budget (scripts/tune-tenclass-configs.sh;\n"
             f"# tables in docs/tune/{task}/):\n"
             f"[methods.backprop-wd.backprop]   # weight decay over {wg} ({wv:.3f})\nweight_decay = {wd:g}\n\n"
             f"[methods.backprop-es.backprop]   # early-stopped on validation; lr over {eg} ({ev:.3f})\nlr = {el:g}\n\n"
             f"[methods.backprop-mse.backprop]  # squared error to the rule's targets; lr over {mg} ({mv:.3f})\nlr = {ml:g}\n\n"
             "[evaluation]\nequivalence_margin = 0.01   # fixed before the run: one point of accuracy\n\n"
             "[frontier]\nbackprop_weight_decay = [0.0, 0.0001, 0.0003, 0.001, 0.003, 0.01]\n"
             "local_lr = []\nlocal_epochs = []\nlocal_weight_decay = [0.01, 0.1]\n")
    path.write_text(text)
    print(task, "written")
