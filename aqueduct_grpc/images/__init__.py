"""The image service: its handlers, request checks, model catalog and signed image URLs."""
