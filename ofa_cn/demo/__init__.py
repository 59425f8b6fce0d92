"""The demo (`make demo`): its generated data, shipped pretrained checkpoint, image-reliance check and report page."""
