"Packaging for audioset_nb; every setting is read from settings.ini (nbdev 2)."
import shlex
from configparser import ConfigParser
from setuptools import find_packages, setup

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['Planning', 'Pre-Alpha', 'Alpha', 'Beta', 'Production/Stable', 'Mature', 'Inactive']
lic = licenses[cfg['license']]
requirements = shlex.split(cfg.get('requirements', ''))  # what the main job (./runme.sh) imports
# Each `<name>_requirements` line is the extra `<name>`: `import` (parquet and URLs), `onnx`, `demo` (the widget);
# `dev` (./test.sh) is the test tools and every other extra.
extras = {k[:-len('_requirements')]: shlex.split(v) for k, v in cfg.items() if k.endswith('_requirements')}
extras['dev'] = [r for name in sorted(extras) for r in extras[name]]
scripts = [s.replace(' ', '') for s in cfg.get('console_scripts', '').split() if s]

setup(
    name=cfg['lib_name'].replace('_', '-'), version=cfg['version'],
    description=cfg['description'], keywords=cfg['keywords'],
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown',
    author=cfg['author'], author_email=cfg['author_email'], url=cfg['git_url'],
    license=lic[0], python_requires='>=' + cfg['min_python'],
    classifiers=['Development Status :: ' + str(int(cfg['status']) + 1) + ' - ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(), 'License :: ' + lic[1],
                 'Natural Language :: ' + cfg['language'].title(), 'Programming Language :: Python :: 3',
                 'Topic :: Multimedia :: Sound/Audio :: Analysis'],
    packages=find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']),
    package_data={cfg['lib_name']: ['data/*']}, include_package_data=True, zip_safe=False,
    install_requires=requirements, extras_require=extras,
    entry_points={'console_scripts': scripts, 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
