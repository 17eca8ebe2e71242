"""A tiny, randomly initialised SAM 3 saved as a local checkpoint folder: the `sam3` kind's tests run it on a CPU
without a download. Its masks mean nothing; its shapes, batching and post-processing are SAM 3's own."""

from __future__ import annotations

import json
from pathlib import Path

IMAGE_SIZE = 56  # 4 x 4 patches of 14 pixels
QUERIES = 8


def save(folder: Path, seed: int = 0) -> Path:
    """Build the model and its processor (a CLIP tokenizer over a letters-only vocabulary) into ``folder``."""
    import torch
    from transformers import CLIPTokenizer, Sam3Config, Sam3Model, Sam3Processor
    from transformers.models.sam3.image_processing_sam3 import Sam3ImageProcessor

    torch.manual_seed(seed)
    h = 32
    small = dict(num_attention_heads=2, intermediate_size=64)
    cfg = Sam3Config(
        vision_config=dict(
            backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, num_hidden_layers=2, image_size=IMAGE_SIZE,
                                 patch_size=14, window_size=2, global_attn_indexes=[1], pretrain_image_size=IMAGE_SIZE,
                                 **small),
            fpn_hidden_size=h, backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]]),
        text_config=dict(model_type="clip_text_model", vocab_size=64, hidden_size=32, projection_dim=32,
                         num_hidden_layers=1, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1, **small),
        geometry_encoder_config=dict(hidden_size=h, num_layers=1, **small),
        detr_encoder_config=dict(hidden_size=h, num_layers=1, **small),
        detr_decoder_config=dict(hidden_size=h, num_layers=1, num_queries=QUERIES, **small),
        mask_decoder_config=dict(hidden_size=h, num_attention_heads=2),
    )
    folder.mkdir(parents=True, exist_ok=True)
    Sam3Model(cfg).eval().save_pretrained(folder)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok_dir = folder / "tokenizer-src"
    tok_dir.mkdir(exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=32)
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                              tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder
