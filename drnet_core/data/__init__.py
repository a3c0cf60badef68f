"""Inputs: the dataset registry, uploaded images and archives, out-of-distribution test sets."""
