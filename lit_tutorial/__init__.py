"""The 'Learning PyTorch with Examples' tutorial rebuilt with PyTorch Lightning."""
