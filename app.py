"""ProFashion Explorer: the app entry point (`make demo`, Hugging Face Spaces).

The Gradio app itself (Retrieve / Explore / Embeddings / Fine-tune / Results tabs) is being built;
until it lands this entry point checks that the library is installed and tells you what already works.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    import profashion

    port = os.environ.get("PORT", "7860")
    print(f"ProFashion Explorer {profashion.__version__}: the library is installed; models: "
          f"{', '.join(profashion.available_models())}.")
    print(f"The Gradio app (port {port}) is not built yet. What works today, from this folder:")
    print("  .venv/bin/profashion generate synth --out data/synth          # synthetic garments + masks")
    print("  .venv/bin/profashion train --model asen --dataset data/synth --out runs/asen")
    print("  .venv/bin/profashion eval --dataset data/synth --checkpoint runs/asen/best")
    print("  .venv/bin/profashion eval --dataset ../shared/data/asen-splits/FashionAI --embeddings random")
    print("See README.md for the measured results.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
