"""Prepare data ahead of training (same as the ``pspl-data`` command), e.g.

    python scripts/prepare_data.py prepare data=div2k data.root=/data/DIV2K data.cache_dir=/fast/cache
    python scripts/prepare_data.py make-lr /data/benchmarks/Set5/HR /data/benchmarks/Set5/LR_bicubic \
        --scale 2 3 4
"""

from pspl_lightning.cli.data import main

if __name__ == "__main__":
    main()
