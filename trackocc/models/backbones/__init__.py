from .resnet3d import CustomResNet3D  # noqa: F401
