"""Behaviour policies for collecting offline datasets: random, and SAC-trained ones."""
