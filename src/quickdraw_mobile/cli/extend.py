"""``qdm extend``: new classes for a trained model from a few drawings each."""

from __future__ import annotations

import argparse


def _cmd_extend(args: argparse.Namespace) -> int:
    from ..extend import extend

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    summary = extend(args.model, args.data, args.out, method=args.method, shots=args.shots, seed=args.seed,
                     classes=classes, replay=args.replay, views=args.views, steps=args.steps,
                     old_kept=args.old_kept, features=args.features)
    new = summary["new_classes"]
    print(f"{args.out}: {summary['old_classes']} + {len(new)} classes ({', '.join(new[:8])}"
          f"{', ...' if len(new) > 8 else ''}) by {summary['method']} from {summary['shots']} drawings each")
    return 0


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("extend", help="add classes to a trained model from a few drawings each",
                         description="Teach a trained model new classes from K drawings each, keeping the classes "
                         "it knows; the result is an ordinary run folder (evaluate, predict, quantize, export). "
                         "Classes the model knows are skipped (an error when named with --classes).")
    p.add_argument("--model", required=True, help="run folder or a bundled model (default, default345)")
    p.add_argument("--data", required=True, help="the new classes' drawings: a store, or a folder of .ndjson "
                   "(or .npy/.bin) files named by class, such as the shared simplified/ or raw/ folders")
    p.add_argument("--out", required=True, help="the new run folder")
    p.add_argument("--method", default="prototype", help="prototype | probe | finetune (default: prototype): a centred "
                   "cosine classifier of class means, a linear probe on frozen features, or the probe then a "
                   "short fine-tune of the whole model")
    p.add_argument("--features", default="pooled", help="pooled | multiscale (default: pooled): what --method probe "
                   "(and finetune's probe) reads; multiscale adds the frozen model's earlier layers, pooled, each "
                   "block unit length, averaged with the mirrored drawing's (the new classes get their own head; "
                   "the model runs its layers twice)")
    p.add_argument("--shots", type=int, default=10, help="drawings per new class (default: 10)")
    p.add_argument("--seed", type=int, default=0, help="which drawings are the shots, and the fits' seed")
    p.add_argument("--classes", help="comma-separated classes to add (default: every class at --data the model "
                   "does not know)")
    p.add_argument("--replay", help="the store the model was trained on, for its old classes' drawings (default: "
                   "the run folder's calibration.npz; 'default' has one)")
    p.add_argument("--views", type=int, default=8, help="augmented copies of each shot, with the run's training "
                   "augmentation (default: 8)")
    p.add_argument("--steps", type=int, default=200, help="optimizer steps of --method finetune (default: 200)")
    p.add_argument("--old-kept", type=float, help="calibrate the new classes as a group: one offset on their logits, "
                   "the largest that leaves at least this fraction of the old classes' replay drawings on an old "
                   "class (e.g. 0.99; default: no offset)")
    p.set_defaults(func=_cmd_extend)
