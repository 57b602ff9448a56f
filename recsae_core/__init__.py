"""recsae_core: models, sparse autoencoders, probing, metrics and steering for recommender systems."""

__version__ = "0.1.0"
