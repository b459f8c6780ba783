"""Recipes: what train.py and eval.py run, one function per job."""
