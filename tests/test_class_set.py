"""Zero-shot class-set switching: the class set follows dataset metadata, labels map both ways."""
import pytest
import torch
from torch import nn

from detectron2.data import MetadataCatalog

from zsi_d2.modeling.class_set import (
    ClassSet,
    ZeroShotModule,
    apply_class_set,
    dataset_class_set,
    use_class_set,
)

THINGS = ("cat", "dog", "cow", "bus")


@pytest.fixture(scope="module")
def toy_datasets():
    for mode in ("train", "gzsi", "zsi"):
        MetadataCatalog.get(f"toy_cs_{mode}").set(
            thing_classes=list(THINGS), seen_classes=("cat", "bus"), unseen_classes=("dog", "cow"),
            zero_shot_mode=mode,
        )
    return {m: f"toy_cs_{m}" for m in ("train", "gzsi", "zsi")}


def test_modes_pick_the_right_classes(toy_datasets):
    assert dataset_class_set(toy_datasets["train"]).names == ("cat", "bus")
    assert dataset_class_set(toy_datasets["gzsi"]).names == THINGS
    assert dataset_class_set(toy_datasets["zsi"]).names == ("dog", "cow")


def test_labels_map_both_ways(toy_datasets):
    cs = dataset_class_set(toy_datasets["zsi"])  # local 0 = dog (dataset 1), local 1 = cow (2)
    assert cs.to_dataset(torch.tensor([1, 0, 1])).tolist() == [2, 1, 2]
    assert cs.to_local(torch.tensor([2, 1])).tolist() == [1, 0]


def test_unseen_label_in_training_is_refused(toy_datasets):
    cs = dataset_class_set(toy_datasets["train"])
    with pytest.raises(ValueError, match="dog"):
        cs.to_local(torch.tensor([0, 1]))


def test_missing_metadata_is_a_clear_error():
    MetadataCatalog.get("toy_cs_plain").set(thing_classes=["a"])
    with pytest.raises(KeyError, match="make_zero_shot"):
        dataset_class_set("toy_cs_plain")


class _Recorder(nn.Module, ZeroShotModule):
    def __init__(self):
        super().__init__()
        self.names = None

    def set_class_names(self, names):
        self.names = names


def test_use_class_set_switches_and_restores(toy_datasets):
    model = nn.Sequential(_Recorder(), nn.Sequential(_Recorder()))
    model.class_set = ClassSet(("cat", "bus"), THINGS, "train")
    apply_class_set(model, model.class_set)
    with use_class_set(model, toy_datasets["zsi"]) as cs:
        assert cs.names == ("dog", "cow")
        assert model[0].names == ("dog", "cow") and model[1][0].names == ("dog", "cow")
    assert model[0].names == ("cat", "bus") and model.class_set.mode == "train"


def test_model_without_zero_shot_modules_is_refused(toy_datasets):
    with pytest.raises(TypeError, match="no zero-shot modules"):
        apply_class_set(nn.Linear(2, 2), dataset_class_set(toy_datasets["gzsi"]))
