"""Normalisation constants, in [0, 1] units, stored with every model we save."""

# The original push-pull code's CIFAR-10 statistics: (125.3, 123.0, 113.9) / 255 and (63.0, 62.1, 66.7) / 255.
CIFAR10_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR10_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
