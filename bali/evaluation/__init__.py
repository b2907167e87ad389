"""Downstream evaluation of a base and an aligned model under one protocol: zero-shot entity
linking, NER fine-tuning, BLURB-style sentence / relation classification."""
