"""ZegFormer's CLIP image branch (zsi_d2.modeling.clip_image_branch): the fusion and CLIP's
probabilities on hand-computed values, the crop geometry of known masks, the branch off without
weights, batched = one by one, the whole branch with a tiny random open_clip model saved to a file,
and bad weights in one line. No CLIP weights ship, so nothing here measures the branch's accuracy."""
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from zsi_d2.config import get_zsi_d2_cfg
from zsi_d2.errors import InputFileNotFoundError, InputValueError
from zsi_d2.modeling.clip_image_branch import (
    IMAGENET_TEMPLATES_SELECT_CLIP,
    ClipImageBranch,
    add_clip_image_branch_config,
    clip_inputs,
    clip_probabilities,
    fuse_probabilities,
    gzero_calibrate,
    mask_boxes,
    normalize_for_clip,
    segmenter_probabilities,
)

LOGGER = "zsi_d2.modeling.clip_image_branch"


def branch_cfg(*opts):
    cfg = add_clip_image_branch_config(get_zsi_d2_cfg())
    cfg.merge_from_list(["MODEL.ZERO_SHOT.EMBEDDING.CACHE_DIR", "none", *opts])
    return cfg


def tiny_opts(tiny_clip, *opts):
    return ["MODEL.SEM_SEG_HEAD.CLIP_CLASSIFICATION", "True", "MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS", tiny_clip["ckpt"],
            "MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED", tiny_clip["arch"], *opts]


def l_shaped_mask(h=20, w=20):
    """Rows 4-11 of columns 6-8, plus rows 9-11 of columns 6-15: box (6, 4, 15, 11)."""
    m = torch.zeros(h, w, dtype=torch.bool)
    m[4:12, 6:9] = True
    m[9:12, 6:16] = True
    return m


def as_logits(masks):
    return masks.float() * 20 - 10


# ---- fusion and probabilities, by hand ---------------------------------------------------------
def test_fuse_probabilities_hand_computed():
    seen = torch.tensor([True, True, False])
    # ENSEMBLING: CLIP's seen pair (0.001, 0.053) -> mean 0.027; seen 0.125^(2/3) 0.027^(1/3) = 0.25 * 0.3,
    # 0.027^(2/3) 0.027^(1/3) = 0.027; unseen 0.064^(1/3) 0.216^(2/3) = 0.4 * 0.36.
    p_seg = torch.tensor([[0.125, 0.027, 0.064]], dtype=torch.float64)
    p_clip = torch.tensor([[0.001, 0.053, 0.216]], dtype=torch.float64)
    fused = fuse_probabilities(p_seg, p_clip, seen)
    torch.testing.assert_close(fused, torch.tensor([[0.075, 0.027, 0.144]], dtype=torch.float64))
    # ENSEMBLING_ALL_CLS: p_seg^(1/3) p_clip^(2/3) everywhere, CLIP's seen values kept.
    p_clip = torch.tensor([[0.008, 0.001, 0.216]], dtype=torch.float64)
    fused = fuse_probabilities(p_seg, p_clip, seen, all_classes=True)
    torch.testing.assert_close(fused, torch.tensor([[0.5 * 0.04, 0.3 * 0.01, 0.4 * 0.36]], dtype=torch.float64))
    # no seen class: every class is fused as unseen
    fused = fuse_probabilities(p_seg, p_clip, torch.zeros(3, dtype=torch.bool))
    torch.testing.assert_close(fused[0, 0], torch.tensor(0.5 * 0.04, dtype=torch.float64))


def test_clip_probabilities_hand_computed():
    # cosines (1, 0) x scale 2 -> logits (2, 0), then the no-object logit 0: softmax over (2, 0, 0), last dropped.
    features = torch.tensor([[3.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = clip_probabilities(features, text, 2.0, torch.tensor([0.0]))
    e2 = math.exp(2)
    torch.testing.assert_close(p, torch.tensor([[e2 / (e2 + 2), 1 / (e2 + 2)]]))
    # a confident "no object" takes the mass away from every class
    assert clip_probabilities(features, text, 2.0, torch.tensor([10.0])).sum() < 1e-3
    torch.testing.assert_close(segmenter_probabilities(torch.tensor([[2.0, 0.0, 0.0]])), p)


def test_gzero_calibrate_where_and_when():
    semseg = torch.arange(12, dtype=torch.float32).view(3, 2, 2)
    seen = torch.tensor([True, False, True])
    out = gzero_calibrate(semseg, seen, 0.1)
    torch.testing.assert_close(out[[0, 2]], semseg[[0, 2]] - 0.1)
    assert torch.equal(out[1], semseg[1])
    for off in (-1.0, 0.0):  # ZegFormer's default and the ADE-847 eval config: unchanged
        assert torch.equal(gzero_calibrate(semseg, seen, off), semseg)


# ---- crop geometry ----------------------------------------------------------------------------
def test_mask_boxes_known_masks():
    h, w = 20, 30
    masks = torch.zeros(4, h, w, dtype=torch.bool)
    masks[0] = l_shaped_mask(h, w)
    masks[2, 7, 3:9] = True  # one row thin: zero area, the whole image as ZegFormer does
    masks[3, 5, 5] = True
    boxes = mask_boxes(masks)
    assert boxes[0].tolist() == [6.0, 4.0, 15.0, 11.0]
    for q in (1, 2, 3):  # empty, one row, one pixel
        assert boxes[q].tolist() == [0.0, 0.0, float(w), float(h)]


def test_crop_content_of_a_known_mask():
    """roi_align(aligned=True) over box (6, 4, 15, 11) at size S samples bin k at x = 5.5 + (k + 0.5) * 9 / S
    (y alike, 3.5 + (k + 0.5) * 7 / S); on an image whose channels are the x and y pixel indices that is
    exactly the output. Under "cropmask" the part of the box outside the L is 0."""
    h = w = 20
    size = 8
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    image = torch.stack([xx, yy, torch.ones(h, w)])
    logits = as_logits(l_shaped_mask(h, w))[None]
    k = torch.arange(size, dtype=torch.float32) + 0.5
    expected_x = (5.5 + k * 9 / size).expand(size, size)
    expected_y = (3.5 + k * 7 / size)[:, None].expand(size, size)
    crop = clip_inputs(image, logits, "crop", size)
    assert crop.shape == (1, 3, size, size)
    torch.testing.assert_close(crop[0, 0], expected_x)
    torch.testing.assert_close(crop[0, 1], expected_y)
    cropmask = clip_inputs(image, logits, "cropmask", size)
    # bins 5-7 of x sample at x >= 11.7 and bins 0-2 of y at y <= 6.2: all four neighbours outside the L
    assert cropmask[0, :, :3, 5:].abs().max() == 0
    # y bins 6-7 sample rows 9.2 and 10.1, x bins 1-7 (two samples each) columns 6.9 to 14.2: all inside it
    torch.testing.assert_close(cropmask[0, :, 6:, 1:], crop[0, :, 6:, 1:])
    # an empty mask: box = the whole image; "crop" resizes it, "cropmask" shows nothing
    empty = torch.full((1, h, w), -10.0)
    whole = clip_inputs(image, empty, "crop", size)
    # (the first and last bins sample beyond the border, which roi_align clamps: only the inner ones are linear)
    torch.testing.assert_close(whole[0, 0, :, 1:-1], (-0.5 + k * w / size).expand(size, size)[:, 1:-1])
    assert clip_inputs(image, empty, "cropmask", size).abs().max() == 0
    # "mask": the whole image, resized, times the resized mask
    masked = clip_inputs(image, logits, "mask", size)
    resized = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)
    keep = F.interpolate(logits[None], size=(size, size), mode="bilinear", align_corners=False)[0].sigmoid() > 0.5
    torch.testing.assert_close(masked, resized * keep[:, None])
    assert 0 < keep.sum() < size * size


def test_normalize_for_clip_flips_bgr_and_pads_with_zero():
    mean, std = torch.tensor([10.0, 20.0, 30.0]), torch.tensor([2.0, 4.0, 5.0])
    image = torch.zeros(3, 2, 3, dtype=torch.uint8)
    image[0], image[1], image[2] = 30, 20, 10  # BGR: blue 30, red 10
    out = normalize_for_clip(image, (4, 5), mean, std, "BGR")
    assert out.shape == (3, 4, 5)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 0.0, 0.0]))  # RGB (10, 20, 30) = the mean
    assert out[:, 2:].abs().max() == 0 and out[:, :, 3:].abs().max() == 0
    rgb = normalize_for_clip(image, (2, 3), mean, std, "RGB")
    torch.testing.assert_close(rgb[:, 0, 0], torch.tensor([10.0, 0.0, -4.0]))


# ---- the branch -------------------------------------------------------------------------------
def test_branch_off_without_weights_logs_once_and_changes_nothing(caplog):
    logits = torch.randn(5, 4)
    for opts, level in ((["MODEL.SEM_SEG_HEAD.CLIP_CLASSIFICATION", "True"], logging.WARNING), ([], logging.INFO)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger=LOGGER):
            branch = ClipImageBranch(branch_cfg(*opts))
        records = [r for r in caplog.records if r.name == LOGGER]
        assert len(records) == 1 and records[0].levelno == level and "CLIP image branch off" in records[0].message
        assert not branch.enabled
        # the segmenter's probabilities, unchanged; the image is never looked at
        assert torch.equal(branch.classify(None, None, logits, torch.ones(3, dtype=torch.bool)),
                           F.softmax(logits, dim=-1)[:, :-1])
        assert not [r for r in caplog.records if r.name == LOGGER][1:], "the off branch logged again"
        assert list(branch.state_dict()) == [] and list(branch.parameters()) == []


def test_whole_branch_with_a_tiny_clip_checkpoint(tiny_clip, no_network, caplog):
    """From a config to p_clip, against open_clip's own model: BGR images flipped, CLIP's mean / std,
    the checkpoint's logit scale, the no-object logit, the 32 templates of the text side."""
    with caplog.at_level(logging.INFO, logger=LOGGER):
        branch = ClipImageBranch(branch_cfg(*tiny_opts(tiny_clip, "INPUT.FORMAT", "BGR",
                                                       "MODEL.CLIP_CLS_STYLE", "crop")))
    assert branch.enabled and branch.input_size == 32
    assert sum("CLIP image branch on" in r.message for r in caplog.records) == 1
    assert list(branch.state_dict()) == [] and list(branch.parameters()) == [], "CLIP would enter checkpoints"
    model = tiny_clip["model"]
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)  # BGR, the model's input size
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[1, 3:20, 5:30] = True
    masks[2] = l_shaped_mask(32, 32)
    no_object = torch.tensor([0.5, -1.0, 2.0])
    names = ["red circle", "tv, monitor", "dog"]
    text = branch.class_embeddings(names)
    # the text side: every template x synonym encoded, normalised, averaged, renormalised
    import open_clip

    tokenizer = open_clip.get_tokenizer(tiny_clip["arch"])
    with torch.no_grad():
        prompts = [t.replace("{}", s) for t in IMAGENET_TEMPLATES_SELECT_CLIP for s in ("tv", "monitor")]
        tv = F.normalize(F.normalize(model.encode_text(tokenizer(prompts)), dim=-1).mean(0), dim=0)
    assert len(IMAGENET_TEMPLATES_SELECT_CLIP) == 32
    torch.testing.assert_close(text[1], tv, atol=1e-5, rtol=1e-5)
    p_clip = branch(image, as_logits(masks), text, no_object)
    assert p_clip.shape == (3, 3)
    # mask 0 is empty: under "crop" its box is the whole 32 x 32 image, sampled at its own pixels
    mean = torch.tensor([122.7709383, 116.7460125, 104.09373615]).view(3, 1, 1)
    std = torch.tensor([68.5005327, 66.6321579, 70.3231630]).view(3, 1, 1)
    rgb = (image.flip(0).float() - mean) / std
    with torch.no_grad():
        feature = F.normalize(model.encode_image(rgb[None]), dim=-1)
    logits = torch.cat([model.logit_scale.exp() * feature @ text.t(), no_object[:1, None]], dim=1)
    torch.testing.assert_close(p_clip[:1], F.softmax(logits, dim=-1)[:, :-1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(p_clip[1], p_clip[0]) and not torch.allclose(p_clip[2], p_clip[1])
    # classify: ENSEMBLING's fusion of softmax(class logits) and p_clip
    fusing = ClipImageBranch(branch_cfg(*tiny_opts(tiny_clip, "INPUT.FORMAT", "BGR", "MODEL.CLIP_CLS_STYLE", "crop",
                                                   "MODEL.MASK_FORMER.ENSEMBLING", "True")))
    class_logits = torch.cat([torch.randn(3, 3), no_object[:, None]], dim=1)
    seen = torch.tensor([True, True, False])
    torch.testing.assert_close(fusing.classify(image, as_logits(masks), class_logits, seen, text),
                               fuse_probabilities(F.softmax(class_logits, -1)[:, :-1], p_clip, seen))
    # ENSEMBLING off: CLIP's probabilities alone, as ZegFormer with CLIP_CLASSIFICATION only
    torch.testing.assert_close(branch.classify(image, as_logits(masks), class_logits, seen, text), p_clip)


def test_branch_from_an_open_clip_folder(tiny_clip, no_network):
    """CLIP_WEIGHTS may be an open_clip folder (open_clip_config.json + weights), the image and the text side."""
    import json

    from conftest import TINY_CLIP_CFG

    folder = tiny_clip["folder"] / "branch_folder"
    folder.mkdir(exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    torch.save(tiny_clip["model"].state_dict(), folder / "open_clip_pytorch_model.bin")
    from_file = ClipImageBranch(branch_cfg(*tiny_opts(tiny_clip)))
    from_folder = ClipImageBranch(branch_cfg(*tiny_opts(tiny_clip, "MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS", str(folder))))
    names = ["cat", "dog"]
    torch.testing.assert_close(from_folder.class_embeddings(names), from_file.class_embeddings(names))
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    masks = as_logits(l_shaped_mask(32, 32))[None]
    text, no_object = from_file.class_embeddings(names), torch.zeros(1)
    torch.testing.assert_close(from_folder(image, masks, text, no_object), from_file(image, masks, text, no_object))


@pytest.mark.parametrize("style", ["cropmask", "crop", "mask"])
def test_batched_equals_one_by_one(tiny_clip, style):
    torch.manual_seed(1)
    image = torch.randint(0, 256, (3, 40, 52), dtype=torch.uint8)
    masks = torch.zeros(5, 48, 64, dtype=torch.bool)  # padded beyond the image, as a padded batch is
    masks[0, 2:30, 4:20] = True
    masks[1] = F.pad(l_shaped_mask(20, 20), (30, 14, 20, 8))
    masks[3, 10, 10:40] = True  # a line: the whole image
    masks[4, 30:40, 40:52] = True
    text = F.normalize(torch.randn(4, 32), dim=-1)
    no_object = torch.randn(5)
    branch = ClipImageBranch(branch_cfg(*tiny_opts(tiny_clip, "MODEL.CLIP_CLS_STYLE", style)))
    batched = branch(image, as_logits(masks), text, no_object)
    singles = torch.cat([branch(image, as_logits(masks[q : q + 1]), text, no_object[q : q + 1]) for q in range(5)])
    torch.testing.assert_close(batched, singles, atol=1e-6, rtol=1e-5)
    branch.masks_per_batch = 2
    torch.testing.assert_close(branch(image, as_logits(masks), text, no_object), batched, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(batched[0], batched[1])


def test_bad_weights_and_settings_in_one_line(tiny_clip, tmp_path, no_network):
    def one_line(error_type, *opts, match):
        with pytest.raises(error_type, match=match) as info:
            ClipImageBranch(branch_cfg(*opts))
        assert "\n" not in str(info.value), str(info.value)

    missing = tiny_opts(tiny_clip, "MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS", str(tmp_path / "no.pt"))
    one_line(InputFileNotFoundError, *missing,
             match=r"CLIP image branch: checkpoint not found: .*no\.pt\. Set MODEL\.SEM_SEG_HEAD\.CLIP_WEIGHTS to")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    one_line(InputValueError, *tiny_opts(tiny_clip, "MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS", str(garbage)),
             match=r"CLIP_WEIGHTS=.*garbage\.pt is not a readable open_clip checkpoint of .*CLIP_PRETRAINED=")
    # the right file read as another (tiny) architecture
    import json

    import open_clip

    from conftest import TINY_CLIP_CFG

    other = tmp_path / "zsi-d2-test-tiny-clip-wide.json"
    other.write_text(json.dumps({**TINY_CLIP_CFG, "embed_dim": 48}))
    open_clip.add_model_config(str(other))
    one_line(InputValueError, *tiny_opts(tiny_clip, "MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED", "zsi-d2-test-tiny-clip-wide"),
             match=r"not a readable open_clip checkpoint .*tensors do not fit .*CLIP_PRETRAINED matches the checkpoint")
    one_line(InputValueError, *tiny_opts(tiny_clip, "MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED", "ViT-Q-99"),
             match="Unknown open_clip architecture MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED")
    one_line(InputValueError, *tiny_opts(tiny_clip, "MODEL.CLIP_CLS_STYLE", "box"), match="MODEL.CLIP_CLS_STYLE='box'")
    one_line(InputValueError, "MODEL.MASK_FORMER.ENSEMBLING", "True", "MODEL.MASK_FORMER.ENSEMBLING_ALL_CLS", "True",
             match="both True")
    one_line(InputValueError, *tiny_opts(tiny_clip, "INPUT.FORMAT", "L"), match="INPUT.FORMAT='L'")


def test_config_keys_do_not_hide_the_core_keys(tiny_clip):
    """Called before add_mask_former_config, the branch's keys must not stop the core's from being added."""
    from detectron2.config import get_cfg

    from zsi_d2.config import add_zsi_d2_config
    from zsi_d2.modeling.mask_former.config import add_mask_former_config

    cfg = add_clip_image_branch_config(add_zsi_d2_config(get_cfg()))
    add_mask_former_config(cfg)
    add_clip_image_branch_config(cfg)  # twice: safe
    assert cfg.MODEL.MASK_FORMER.CLASS_WEIGHT == 2.0 and cfg.MODEL.MASK_FORMER.ENSEMBLING is False
    assert cfg.MODEL.SEM_SEG_HEAD.CLIP_WEIGHTS == "" and cfg.MODEL.CLIP_CLS_STYLE == "cropmask"
    # ZegFormer's spelling of the architecture is open_clip's name
    from zsi_d2.utils.open_clip_local import resolve_local_open_clip

    ckpt = resolve_local_open_clip(tiny_clip["ckpt"], "ViT-B/16", path_key="P", arch_key="A", what="W")
    assert ckpt.model_name == "ViT-B-16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_branch_on_a_gpu_equals_the_cpu(tiny_clip):
    """The encoder follows the masks' device (it is no submodule, so .to() does not move it)."""
    torch.manual_seed(2)
    image = torch.randint(0, 256, (3, 40, 52), dtype=torch.uint8)
    masks = torch.zeros(3, 48, 64, dtype=torch.bool)
    masks[0, 2:30, 4:20] = True
    masks[2, 30:40, 40:52] = True
    text, no_object = F.normalize(torch.randn(4, 32), dim=-1), torch.randn(3)
    branch = ClipImageBranch(branch_cfg(*tiny_opts(tiny_clip)))
    cpu = branch(image, as_logits(masks), text, no_object)
    gpu = branch.to("cuda")(image.cuda(), as_logits(masks).cuda(), text.cuda(), no_object.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-3)
