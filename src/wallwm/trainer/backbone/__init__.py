"""A pretrained vision-language backbone for the World Action Model (``--backbone DIR``)."""
