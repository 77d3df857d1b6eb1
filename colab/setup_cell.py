# Setup. On Colab: fetch the course at a pinned version and install what Colab lacks
# (Colab's own torch is kept). Anywhere else: nothing to do, `python3 course.py lab` did it.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    COURSE = "/content/course"
    if not os.path.isdir(COURSE):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", "{ref}",
                        "https://github.com/{repository}", COURSE], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-r",
                    f"{COURSE}/colab/requirements.txt"], check=True)
    sys.path.insert(0, COURSE)
    os.chdir(f"{COURSE}/notebooks")
