"""Repositories of the lab: local tools and offline stand-ins (third_party/README.md says why)."""

def _debian_or_archive_impl(ctx):
    local = ctx.path(ctx.attr.local_path)
    if local.exists:
        # Debian's copy: link it into the repository, under local_prefix.
        prefix = ctx.attr.local_prefix
        if prefix:
            ctx.symlink(local, prefix)
        else:
            for child in local.readdir():
                ctx.symlink(child, child.basename)
    else:
        ctx.download_and_extract(
            url = ctx.attr.url,
            sha256 = ctx.attr.sha256,
            stripPrefix = ctx.attr.strip_prefix,
            output = ctx.attr.local_prefix if ctx.attr.archive_into_prefix else "",
        )
    if ctx.attr.build_file:
        ctx.symlink(ctx.attr.build_file, "BUILD.bazel")
    if not ctx.path("WORKSPACE").exists:
        ctx.file("WORKSPACE", "workspace(name = \"%s\")\n" % ctx.name)

debian_or_archive = repository_rule(
    implementation = _debian_or_archive_impl,
    doc = "Uses a Debian-packaged copy where it exists, else the pinned release archive.",
    attrs = {
        "local_path": attr.string(mandatory = True),
        "local_prefix": attr.string(),
        "archive_into_prefix": attr.bool(),
        "url": attr.string(mandatory = True),
        "sha256": attr.string(),
        "strip_prefix": attr.string(),
        "build_file": attr.label(allow_single_file = True),
    },
)

_PY_QUERY = """
import sys, sysconfig
try:
    import pybind11
    pb = pybind11.get_include()
except ImportError:
    pb = ""
print(sysconfig.get_paths()["include"])
print(pb)
print(sysconfig.get_config_var("EXT_SUFFIX"))
print("%d.%d" % sys.version_info[:2])
"""

def _lab_python_impl(ctx):
    root = ctx.path(Label("//:WORKSPACE")).dirname
    python = ctx.os.environ.get("LAB_PYTHON", "%s/.venv/bin/python3" % root)
    if not ctx.path(python).exists:
        fail("Python interpreter %s not found: run tools/setup.sh first (or set LAB_PYTHON)." % python)
    res = ctx.execute([python, "-c", _PY_QUERY])
    if res.return_code != 0:
        fail("could not query %s: %s" % (python, res.stderr))
    include, pybind, suffix, version = res.stdout.strip().split("\n")
    if not pybind:
        fail("pybind11 is not installed in %s: run tools/setup.sh." % python)
    ctx.symlink(include, "python_include")
    ctx.symlink(pybind, "pybind11_include")
    ctx.template("BUILD.bazel", ctx.attr._build_tpl, {
        "%{python}": python,
        "%{version}": version,
        "%{suffix}": suffix,
    })

lab_python = repository_rule(
    implementation = _lab_python_impl,
    doc = "The project virtualenv's interpreter as the Python toolchain, with its and pybind11's headers.",
    environ = ["LAB_PYTHON"],
    local = True,
    attrs = {"_build_tpl": attr.label(default = "//third_party:lab_python.BUILD.tpl")},
)

def _cuda_toolkit_impl(ctx):
    cuda = ctx.os.environ.get("CUDA_PATH", "/usr/local/cuda")
    nvcc = ctx.path(cuda + "/bin/nvcc")
    if nvcc.exists:
        ctx.symlink(cuda + "/include", "include")
        ctx.symlink(cuda + "/lib64", "lib64")
        ctx.file("defs.bzl", "NVCC = \"%s\"\nCUDA_PATH = \"%s\"\n" % (nvcc, cuda))
    else:
        ctx.file("include/.missing", "")
        ctx.file("lib64/.missing", "")
        ctx.file("defs.bzl", "NVCC = \"\"\nCUDA_PATH = \"%s\"\n" % cuda)
    ctx.symlink(ctx.attr._build, "BUILD.bazel")

cuda_toolkit = repository_rule(
    implementation = _cuda_toolkit_impl,
    doc = "The local CUDA toolkit (CUDA_PATH, default /usr/local/cuda): nvcc's path, headers, cudart_static.",
    environ = ["CUDA_PATH"],
    local = True,
    attrs = {"_build": attr.label(default = "//third_party:cuda.BUILD")},
)

def lab_dependencies():
    native.local_repository(name = "rules_cc", path = "third_party/rules_cc_standin")
    native.local_repository(name = "remote_coverage_tools", path = "third_party/remote_coverage_tools_standin")
    debian_or_archive(
        name = "platforms",
        local_path = "/usr/share/bazel/tools/platforms",
        url = "https://github.com/bazelbuild/platforms/releases/download/0.0.2/platforms-0.0.2.tar.gz",
    )
    debian_or_archive(
        name = "rules_java",
        local_path = "/usr/share/bazel/rules/java",
        url = "https://github.com/bazelbuild/rules_java/releases/download/4.0.0/rules_java-4.0.0.tar.gz",
    )
    debian_or_archive(
        name = "rules_proto",
        local_path = "/usr/share/bazel/rules/proto",
        url = "https://github.com/bazelbuild/rules_proto/archive/refs/tags/4.0.0.tar.gz",
        strip_prefix = "rules_proto-4.0.0",
    )
    debian_or_archive(
        name = "nlohmann_json",
        local_path = "/usr/include/nlohmann",
        local_prefix = "include/nlohmann",
        url = "https://github.com/nlohmann/json/releases/download/v3.11.2/include.zip",
        build_file = "//third_party:nlohmann_json.BUILD",
    )
    native.new_local_repository(
        name = "cpython312",
        path = "third_party/cpython3.12-include",
        build_file = "//third_party:cpython312.BUILD",
    )
    lab_python(name = "lab_python")
    cuda_toolkit(name = "cuda")
