"""ImageFolder: autoregressive image generation with folded tokens."""
