"""Model components: UMT video ViT, Q-Former, stage heads, LLM wrapper."""
