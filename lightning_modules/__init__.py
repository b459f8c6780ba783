"""LightningModules: thin glue between the videochat2 library and the Trainer."""
