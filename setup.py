"""
Packaging for stproxy.

The twistd dropin lives in ``twisted/plugins`` with no ``__init__.py`` beside it
(that namespace belongs to Twisted); listing ``twisted.plugins`` as a package
ships the dropin in the wheel.  ``package_dir={"": "."}`` makes setuptools'
editable install a plain ``.pth`` of the project root rather than an import
hook, because Twisted discovers plugins by scanning ``sys.path`` directories
and never sees packages that only a meta-path finder provides.
"""

from setuptools import find_packages, setup

setup(
    name="stproxy",
    version="0.1.0.dev0",
    description="A Twisted reverse proxy and TLS edge for Streamlit apps",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.11",
    package_dir={"": "."},
    packages=find_packages(include=["stproxy", "stproxy.*"]) + ["twisted.plugins"],
    install_requires=[
        "twisted>=26.10,<27",
        "autobahn>=26.10,<27",
        "treq>=26.7",
        "service-identity>=26.1",
        "pyOpenSSL>=26.4",
        "prometheus_client>=0.20",
        "bcrypt>=4",
    ],
    extras_require={
        "demo": ["streamlit>=1.67"],
        "test": [
            "pytest>=9",
            "hypothesis>=6",
            "streamlit>=1.67",
            "selenium>=4.40",
            "pyyaml>=6",
            "websockets>=13",
            # mypy.ini warns of unused ignores, which differ between releases: a
            # mypy upgrade is a decision, like a Twisted one.
            "mypy>=2.4,<2.5",
            "mypy-zope>=1.0.17,<1.1",
        ],
    },
    entry_points={"console_scripts": ["stproxy = stproxy.__main__:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Topic :: Internet :: Proxy Servers",
    ],
)
