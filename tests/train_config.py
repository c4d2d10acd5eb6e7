"""The tiny recipe of tests/test_train.py as a config file for the CLI."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def get_config():
  from test_train import tiny_config
  return tiny_config()
