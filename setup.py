"""Build hook of trackocc (metadata lives in pyproject.toml).

* Compiles the custom ops in ``ops/csrc`` into the extension ``trackocc._ext``: every ``*.cpp``
  always, every ``*.cu`` (with ``-DWITH_CUDA``) when CUDA is available or ``FORCE_CUDA=1``.
  ``TORCH_CUDA_ARCH_LIST`` selects the GPU architectures (e.g. ``9.0`` for H100).
  ``TRACKOCC_NO_EXT=1`` skips the extension (pure-PyTorch ops only).
* Puts ``configs/`` and ``tools/`` into ``trackocc/.mim/`` so ``mim train trackocc CFG`` finds them:
  symbolic links for development installs, copies for wheels.
"""
import glob
import os
import os.path as osp
import shutil
import sys

from setuptools import setup

ROOT = osp.dirname(osp.abspath(__file__))
MIM_ITEMS = ('configs', 'tools')


def add_mim_extension():
    """Link (develop/editable) or copy (wheel/install) configs/ and tools/ into trackocc/.mim."""
    if any(cmd in sys.argv for cmd in ('develop', 'editable_wheel')):
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('install', 'bdist_wheel', 'sdist', 'build', 'build_py')):
        mode = 'copy'
    else:
        return
    mim_dir = osp.join(ROOT, 'trackocc', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for item in MIM_ITEMS:
        src, dst = osp.join(ROOT, item), osp.join(mim_dir, item)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        else:
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


def make_extensions():
    if os.getenv('TRACKOCC_NO_EXT', '0') == '1':
        return [], {}
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    cpp = sorted(glob.glob('ops/csrc/**/*.cpp', recursive=True))
    cuda = sorted(glob.glob('ops/csrc/**/*.cu', recursive=True))
    if not cpp:
        return [], {}
    with_cuda = (torch.cuda.is_available() or os.getenv('FORCE_CUDA', '0') == '1') and bool(cuda)
    extra = {'cxx': ['-O3', '-std=c++17']}
    if with_cuda:
        extra['nvcc'] = ['-O3', '--use_fast_math', '-DWITH_CUDA']
        extra['cxx'].append('-DWITH_CUDA')
        ext = CUDAExtension('trackocc._ext', cpp + cuda, extra_compile_args=extra)
    else:
        ext = CppExtension('trackocc._ext', cpp, extra_compile_args=extra)
    return [ext], {'build_ext': BuildExtension.with_options(use_ninja=True)}


if __name__ == '__main__':
    add_mim_extension()
    ext_modules, cmdclass = make_extensions()
    setup(ext_modules=ext_modules, cmdclass=cmdclass, zip_safe=False)
