# Setup. On Colab: fetch the course and install what Colab lacks (Colab's own torch is kept).
# Anywhere else: nothing to do, `python3 course.py lab` did it.
import sys

if "google.colab" in sys.modules:
    import glob
    import os
    import re
    import shutil
    import subprocess
    import zipfile

    REPOSITORY, REF = "{repository}", "{ref}"
    COURSE = "/content/course"
    URL = f"https://github.com/{REPOSITORY}"
    NAME = REPOSITORY.split("/")[-1]

    class SetupError(Exception):
        def _render_traceback_(self):  # Colab shows this message instead of a traceback
            return ["", f"Setup stopped: {self}", ""]

    def unzip(archive):  # a zip of the repository, as GitHub's "Download ZIP" makes it
        shutil.rmtree(COURSE, ignore_errors=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(COURSE + ".unzip")
        inner = glob.glob(f"{COURSE}.unzip/*/helpers")  # GitHub puts it in NAME-REF/
        shutil.move(os.path.dirname(inner[0]) if inner else COURSE + ".unzip", COURSE)
        shutil.rmtree(COURSE + ".unzip", ignore_errors=True)
        if not os.path.isdir(f"{COURSE}/helpers"):
            raise SetupError(f"{archive} does not hold the course (no helpers/ folder in it).")
        return f"zip {archive}"

    def clone():
        shutil.rmtree(COURSE, ignore_errors=True)
        git = subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", REF,
                              URL, COURSE], capture_output=True, text=True,
                             env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        if git.returncode != 0:
            err = git.stderr
            said = ([ln for ln in err.splitlines() if ln.startswith("fatal:")] or [err])[0].strip()
            why = ("the runtime cannot reach GitHub" if re.search(
                       "resolve host|connect|timed out", err, re.I)
                   else f"{REPOSITORY} has no branch or tag {REF!r}" if "Remote branch" in err
                   else f"there is no public repository {REPOSITORY}" if re.search(
                       "not found|Username|not appear to be a git", err, re.I)
                   else "git failed")
            raise SetupError(
                f"could not fetch the course from {URL} at {REF!r}: {why} (git: {said}).\n"
                "If the runtime has no internet, or GitHub is blocked here: download "
                f"{URL}/archive/{REF}.zip where you can, then either upload it to /content "
                "(Files panel in the left bar) or put it in My Drive and mount Drive (Files "
                "panel, Drive icon), and run this cell again. Otherwise reopen the notebook "
                "from the course's page: its badges point at the right version."
            )
        return f"git {REF}"

    uploads = sorted(glob.glob(f"/content/{NAME}*.zip")
                     + glob.glob(f"/content/drive/MyDrive/{NAME}*.zip"))
    marker = f"{COURSE}/.course-source"
    have = open(marker).read() if os.path.isfile(marker) else None
    if uploads and have != f"zip {uploads[-1]}":
        have = unzip(uploads[-1])
    elif have is None or (have.startswith("git") and have != f"git {REF}"):
        have = clone()  # first run, or a copy of another version left by an earlier notebook
    with open(marker, "w") as f:
        f.write(have)
    print(f"course: {COURSE} (from {have})")

    requirements = open(f"{COURSE}/colab/requirements.txt").read()
    stamp = f"{COURSE}/.installed"
    if not (os.path.isfile(stamp) and open(stamp).read() == requirements):
        print("Installing the course's packages (about 1-2 minutes the first time) ...")
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-r",
                              f"{COURSE}/colab/requirements.txt"])
        if pip.returncode != 0:
            raise SetupError(
                "installing the course's packages failed (pip's ERROR lines above say why).\n"
                "If the runtime has no internet, connect it and run this cell again. Else use "
                "Runtime > Disconnect and delete runtime, then run this cell again; if it fails "
                f"once more, Colab's packages have changed: please report it at {URL}/issues."
            )
        with open(stamp, "w") as f:
            f.write(requirements)
    sys.path.insert(0, COURSE)
    os.chdir(f"{COURSE}/notebooks")
