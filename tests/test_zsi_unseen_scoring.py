"""MODEL.ZSI.UNSEEN_SCORING "seen_projection": the reference code's test-time scores (softmax over
seen + background, then each class scored through the seen class vectors)."""
import pytest
import torch
import torch.nn.functional as F

from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from conftest import tiny_cfg
from zsi_d2.errors import InputValueError
from zsi_d2.modeling import use_class_set

ZSI = "configs/zsi/zs_shapes/zsi_mask_rcnn.yaml"


def _model(scoring):
    torch.manual_seed(0)
    cfg = tiny_cfg("MODEL.EFFICIENTNET.WEIGHTS", "", "MODEL.ZSI.UNSEEN_SCORING", scoring, config=ZSI)
    return build_model(cfg).eval()


def _features(predictor, n=7):
    torch.manual_seed(1)
    return torch.randn(n, predictor.cls_score.project.in_features)


@pytest.mark.parametrize("dataset", ["zs_shapes_tiny_val", "zs_shapes_tiny_val_zsi"])
def test_scores_are_the_softmax_over_seen_projected_through_the_seen_vectors(dataset):
    """By hand from the head's parameters and the class names: seen = the training set's classes."""
    model = _model("seen_projection")
    predictor = model.roi_heads.box_predictor
    bank = predictor.cls_score.classes
    seen_names = MetadataCatalog.get("zs_shapes_tiny_train").seen_classes
    seen_names = [n for n in MetadataCatalog.get("zs_shapes_tiny_train").thing_classes if n in seen_names]
    x = _features(predictor)
    with torch.no_grad(), use_class_set(model, dataset) as class_set:
        scores, _ = predictor(x)
        background = F.normalize(model.proposal_generator.rpn_head.background_vector(), dim=0)  # Sync-bg
        unit = dict(zip(bank.class_names, F.normalize(bank.embeddings, dim=1)))
        v_seen = torch.stack([unit[n] for n in seen_names] + [background])
        v_active = torch.stack([unit[n] for n in class_set.names] + [background])
        semantic = F.normalize(x @ predictor.cls_score.project.weight.t() + predictor.cls_score.project.bias, dim=1)
        p = torch.softmax(predictor.cls_score.log_logit_scale.exp() * semantic @ v_seen.t(), dim=1)
        expected = p @ v_seen @ v_active.t()
        torch.testing.assert_close(scores, expected)
        probs = predictor.predict_probs((scores, None), [torch.zeros(len(x))])[0]
        torch.testing.assert_close(probs, expected)  # scores, not logits: no second softmax


def test_an_unseen_class_scores_by_its_similarity_to_the_seen_class_the_roi_looks_like():
    """A RoI whose projection is a seen class's vector (p ≈ one-hot at that class): each unseen
    class then scores its cosine with that seen class (ConSE)."""
    model = _model("seen_projection")
    predictor = model.roi_heads.box_predictor
    bank = predictor.cls_score.classes
    with torch.no_grad(), use_class_set(model, "zs_shapes_tiny_val_zsi") as class_set:
        seen = predictor.seen_classes[0]
        target = bank.embeddings[bank.class_names.index(seen)]
        w, b = predictor.cls_score.project.weight, predictor.cls_score.project.bias
        x = torch.linalg.lstsq(w, (target * 50 - b)[:, None]).solution.t()  # project(x) = 50 · v_seen
        predictor.cls_score.log_logit_scale.fill_(torch.tensor(200.0).log())  # sharp softmax
        scores, _ = predictor(x)
        unit = F.normalize(bank.embeddings, dim=1)
        expected = torch.stack([unit[bank.class_names.index(n)] @ F.normalize(target, dim=0) for n in class_set.names])
        torch.testing.assert_close(scores[0, :-1], expected, atol=1e-3, rtol=1e-3)


def test_direct_scoring_is_the_softmax_over_the_active_classes():
    model = _model("direct")
    predictor = model.roi_heads.box_predictor
    x = _features(predictor)
    with torch.no_grad(), use_class_set(model, "zs_shapes_tiny_val"):
        scores, _ = predictor(x)
        probs = predictor.predict_probs((scores, None), [torch.zeros(len(x))])[0]
        torch.testing.assert_close(probs, torch.softmax(predictor.cls_score(x), dim=1))


def test_training_is_the_same_for_both_scorings():
    a, b = _model("direct").train(), _model("seen_projection").train()
    x = _features(a.roi_heads.box_predictor)
    for out_a, out_b in zip(a.roi_heads.box_predictor(x), b.roi_heads.box_predictor(x)):
        torch.testing.assert_close(out_a, out_b)


def test_an_unknown_scoring_is_one_clear_error():
    with pytest.raises(InputValueError, match="MODEL.ZSI.UNSEEN_SCORING must be one of"):
        _model("conse")


@pytest.mark.parametrize("scoring", ["direct", "seen_projection"])
def test_semantic_mask_head_channels_follow_the_scoring(scoring):
    """Mask logits of a class = its row · the explicit semantic map; with "seen_projection" the row
    of a class outside the training classes is v_c · V_seenᵀ V_seen (the reference's test time)."""
    from detectron2.structures import Instances

    model = _model(scoring)
    head = model.roi_heads.mask_head
    bank = head.classes
    torch.manual_seed(2)
    x = torch.randn(2, head.convs[0].in_channels, 14, 14)
    with torch.no_grad(), use_class_set(model, "zs_shapes_tiny_val") as class_set:
        unseen = class_set.names.index(class_set.unseen[0])
        seen = class_set.names.index(head.seen_classes[0])
        instances = Instances((28, 28), pred_classes=torch.tensor([unseen, seen]))
        masks = head(x, [instances])[0].pred_masks[:, 0]  # (2, 28, 28) probabilities
        semantic = head.semantic_map(x)
        unit = dict(zip(bank.class_names, F.normalize(bank.embeddings, dim=1)))
        background = F.normalize(model.proposal_generator.rpn_head.background_vector(), dim=0)
        v_seen = torch.stack([unit[n] for n in head.seen_classes] + [background])
        rows = [unit[class_set.names[unseen]], unit[class_set.names[seen]]]
        if scoring == "seen_projection":
            rows[0] = rows[0] @ v_seen.t() @ v_seen
        for i, row in enumerate(rows):
            expected = torch.sigmoid(torch.einsum("d,dhw->hw", row, semantic[i]))
            torch.testing.assert_close(masks[i], expected, atol=1e-5, rtol=1e-4)
