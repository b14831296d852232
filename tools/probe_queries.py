#!/usr/bin/env python
"""Where does the seen bias of a mask-classification model sit: in its classifier, or already in its
query embeddings? An analysis tool (it reads unseen labels of a test set; never use it to choose a
model).

    python tools/probe_queries.py --config-file configs/pading/zs_shapes/pading_stage2.yaml \
        --weights output/.../model_final.pth [--dataset zs_shapes_val_panoptic] [--folds 2] [--json out.json]

The model runs once over DATASET's images (the training mapper, so every segment is a target), its
last-layer queries are matched to the ground truth by its own Hungarian matcher (as in training and
in PADing's query bank), and each matched query keeps its true class. Then, per matched query:

- "model": the model's own classifier, arg-max over the class columns only (no object and the
  panoptic thresholds left out), with every class of DATASET scored (GZSI): accuracy on seen and on
  unseen queries, and the share of unseen queries given a seen class;
- "model, unseen only": the same classifier with only the unseen columns (ZSI);
- "generated means" (models with a generator, PADing's stage 2): each real query is given the class
  of the nearest class mean (cosine), the means of the unseen classes taken from generated
  embeddings and those of the seen classes from the real queries; beside it the same rule with the
  real unseen queries' means (reads unseen labels): do the generated unseen embeddings land where
  the real unseen queries are?
- "oracle probe": a linear softmax classifier trained on the matched queries of the other folds'
  images with all classes' true labels (unseen included), tested on this fold's: how well a
  classifier could do on these very features if it had seen unseen examples. It is an upper bound
  for anything trained on the frozen features (PADing's stage 2 among them), not a zero-shot result.

If the oracle is good and the model bad, the classifier (and what trained it) is the limit; if the
oracle is bad too, the frozen features do not separate the unseen classes from the seen ones.
"""
import argparse
import json
import logging
import os

import torch
import torch.nn.functional as F

import zsi_d2  # noqa: F401  (makes detectron2 importable, registers datasets and models)

from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.data.catalog import require_registered
from zsi_d2.engine import ZeroShotCheckpointer
from zsi_d2.errors import InputError, InputValueError
from zsi_d2.methods.pading.feature_bank import compute_query_bank
from zsi_d2.modeling.class_set import use_class_set

logger = logging.getLogger("zsi_d2.probe_queries")


def matched(bank):
    """(M, C) matched queries, (M,) labels (indices of bank.names), (M,) image index."""
    keep = bank.labels >= 0
    image = torch.arange(len(bank)).unsqueeze(1).expand_as(bank.labels)
    return bank.features[keep], bank.labels[keep], image[keep]


def accuracy_table(pred, labels, unseen_mask):
    """Accuracy on seen and unseen queries, and the share of unseen queries predicted as a seen class."""
    seen_q, unseen_q = ~unseen_mask[labels], unseen_mask[labels]
    correct = pred == labels
    return {
        "seen_accuracy": float(correct[seen_q].float().mean()) if seen_q.any() else None,
        "unseen_accuracy": float(correct[unseen_q].float().mean()) if unseen_q.any() else None,
        "unseen_labelled_seen": float((~unseen_mask[pred[unseen_q]]).float().mean()) if unseen_q.any() else None,
        "seen_queries": int(seen_q.sum()), "unseen_queries": int(unseen_q.sum()),
    }


def fit_linear_probe(x, y, num_classes, epochs=300, lr=0.05, weight_decay=1e-4, seed=0):
    """Softmax regression on standardised features, full batch, Adam (small, deterministic)."""
    g = torch.Generator().manual_seed(seed)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    layer = torch.nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.normal_(0, 0.01, generator=g)
        layer.bias.zero_()
    opt = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    z = (x - mean) / std
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(layer(z), y).backward()
        opt.step()
    return lambda q: layer((q - mean) / std).argmax(1)


def nearest_mean(queries, means):
    return (F.normalize(queries, dim=1) @ F.normalize(means, dim=1).t()).argmax(1)


@torch.no_grad()
def generated_means_tables(model, names, queries, labels, unseen, per_class=64):
    """Nearest-class-mean accuracy with generated unseen means, and with the real ones."""
    real_means = torch.stack([queries[labels == k].mean(0) if (labels == k).any() else torch.zeros(queries.shape[1])
                              for k in range(len(names))])
    stage2_names = model.stage2_class_set.names
    embeddings = model.class_embeddings[[stage2_names.index(names[k]) for k in unseen.nonzero().squeeze(1).tolist()]]
    fake = model.generative_criterion.generator(embeddings.repeat_interleave(per_class, 0))
    generated = real_means.clone()
    generated[unseen] = fake.reshape(len(embeddings), per_class, -1).mean(1)
    return {"generated_unseen_means": accuracy_table(nearest_mean(queries, generated), labels, unseen),
            "real_unseen_means": accuracy_table(nearest_mean(queries, real_means), labels, unseen)}


def probe(cfg, model, dataset, folds):
    with use_class_set(model, dataset) as class_set:
        bank = compute_query_bank(cfg, model, DatasetCatalog.get(dataset))
        queries, labels, image = matched(bank)
        if len(labels) == 0:
            raise InputValueError(f"No query of the model was matched to a ground-truth segment of '{dataset}': "
                                  "give a --dataset with panoptic or instance annotations")
        names = bank.names
        unseen = torch.tensor([n in class_set.unseen for n in names])
        if not unseen.any():
            raise InputValueError(f"'{dataset}' scores no unseen class: give a GZSI test set as --dataset "
                                  "(e.g. zs_shapes_val_panoptic)")
        with torch.no_grad():
            logits = model.classifier(queries.unsqueeze(0))[0][:, : len(names)]  # class columns only
        own = accuracy_table(logits.argmax(1), labels, unseen)
        unseen_idx = unseen.nonzero().squeeze(1)
        zsi_pred = unseen_idx[logits[:, unseen_idx].argmax(1)]
        unseen_q = unseen[labels]
        zsi = {"unseen_accuracy": float((zsi_pred[unseen_q] == labels[unseen_q]).float().mean())}
        model.eval()
        means = (generated_means_tables(model, names, queries, labels, unseen)
                 if getattr(model, "generative_criterion", None) is not None else None)
    fold = image % folds
    oracle_pred = torch.empty_like(labels)
    for k in range(folds):
        train, test = fold != k, fold == k
        predict = fit_linear_probe(queries[train], labels[train], len(names), seed=k)
        with torch.no_grad():
            oracle_pred[test] = predict(queries[test])
    oracle = accuracy_table(oracle_pred, labels, unseen)
    return {"dataset": dataset, "images": len(bank), "matched_queries": int(len(labels)), "classes": list(names),
            "unseen": [n for n, u in zip(names, unseen.tolist()) if u], "model": own, "model_unseen_only": zsi,
            "nearest_mean": means, "oracle_probe": oracle, "folds": folds}


def format_result(r):
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"
    m, o = r["model"], r["oracle_probe"]
    rows = []
    for label, key in (("nearest mean, generated unseen means", "generated_unseen_means"),
                       ("nearest mean, real unseen means", "real_unseen_means")):
        if r.get("nearest_mean"):
            t = r["nearest_mean"][key]
            rows.append(f"{label:<34}\n{'':<34} {pct(t['seen_accuracy']):>9} {pct(t['unseen_accuracy']):>11} "
                        f"{pct(t['unseen_labelled_seen']):>21}")
    return "\n".join([
        f"{r['dataset']}: {r['images']} images, {r['matched_queries']} matched queries "
        f"({m['seen_queries']} seen, {m['unseen_queries']} unseen); query-level accuracy, %",
        f"{'':<34} {'seen acc':>9} {'unseen acc':>11} {'unseen labelled seen':>21}",
        f"{'model (GZSI, class columns)':<34} {pct(m['seen_accuracy']):>9} {pct(m['unseen_accuracy']):>11} "
        f"{pct(m['unseen_labelled_seen']):>21}",
        f"{'model, unseen columns only (ZSI)':<34} {'':>9} {pct(r['model_unseen_only']['unseen_accuracy']):>11}",
        f"{'oracle linear probe (' + str(r['folds']) + '-fold, reads unseen labels)':<34}\n{'':<34} "
        f"{pct(o['seen_accuracy']):>9} {pct(o['unseen_accuracy']):>11} {pct(o['unseen_labelled_seen']):>21}",
        *rows,
    ])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help="the checkpoint to probe (a local file)")
    parser.add_argument("--dataset", default="zs_shapes_val_panoptic", help="a GZSI test set with panoptic or instance targets")
    parser.add_argument("--folds", type=int, default=2, help="image folds of the oracle probe's cross-validation")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config pairs")
    args = parser.parse_args()
    setup_logger(name="zsi_d2")
    for flag, path in (("--config-file", args.config_file), ("--weights", args.weights)):
        if not os.path.isfile(path):
            raise SystemExit(f"probe_queries: {flag} '{path}' is not a file")
    try:
        require_registered(args.dataset, "--dataset")
    except InputError as e:
        raise SystemExit(f"probe_queries: {e}")
    cfg = get_zsi_d2_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.WEIGHTS = args.weights
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.freeze()
    model = build_model(cfg)
    ZeroShotCheckpointer.from_config(cfg, model, "", purpose="eval").resume_or_load(args.weights, resume=False)
    try:
        result = probe(cfg, model, args.dataset, args.folds)
    except ValueError as e:  # a dataset without unseen classes or without matched queries
        raise SystemExit(f"probe_queries: {e}")
    print(format_result(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
