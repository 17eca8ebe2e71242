"""omniseg: omnimodels against specialists on medical image segmentation."""
__version__ = "0.1.0"
