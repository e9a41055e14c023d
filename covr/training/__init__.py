"""Lightning glue: the training module, optimisation, checkpointing and the train/test runs."""
