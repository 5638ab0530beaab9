#!/usr/bin/env python3
"""Every man/*.3 EXAMPLES section, built against an installed tree and run:
a manual page whose example does not compile or crashes misleads exactly
the reader who follows it (four did, found by a fresh-user trial).

usage: man_examples.py SOURCE_DIR PREFIX OUT_DIR [extra cc flags]

Statement fragments are wrapped in main(); file-scope parts (up to the last
column-0 '}' or 'static ...;' line) stay outside. Whole programs (with main)
build as they are.
SPDX-License-Identifier: BSD-2-Clause"""
import glob, os, re, subprocess, sys
src, prefix, out = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(out, exist_ok=True)
env = dict(os.environ, PKG_CONFIG_PATH=prefix + '/lib/pkgconfig')
cf = subprocess.check_output(['pkg-config', '--cflags', 'vmem'], env=env, text=True).split()
lf = subprocess.check_output(['pkg-config', '--libs', 'vmem'], env=env, text=True).split()
extra = sys.argv[4:]  # e.g. -fsanitize=address
INC = ['stdint.h', 'stdio.h', 'signal.h', 'unistd.h', 'vmem/vmem.h', 'vmem/kmem.h',
       'vmem/segkmem.h', 'vmem/segkp.h', 'vmem/kthread.h', 'vmem/layout.h']
fail = 0
for page in sorted(glob.glob(src + '/man/*.3')):
    name = os.path.basename(page)[:-2]
    text = open(page).read()
    m = re.search(r'^\.Sh EXAMPLES\n(.*?)(?=^\.Sh )', text, re.S | re.M)
    if not m:
        continue
    blocks = re.findall(r'^\.Bd -literal[^\n]*\n(.*?)^\.Ed\n', m.group(1), re.S | re.M)
    code = '\n'.join(blocks)
    code = re.sub(r'^(\s*)\\&\.\.\.$', r'\1/* ... */', code, flags=re.M)
    code = code.replace('\\&', '').replace('\\e', '\\')
    if re.search(r'^main\(', code, re.M):
        prog = code
    else:
        lines = code.split('\n')
        cut, infn = 0, False
        for i, l in enumerate(lines):
            if l == '{':
                infn = True
            elif l == '}' and infn:
                infn, cut = False, i + 1
            elif re.match(r'^static [^(]*;$', l):
                cut = i + 1
        prog = ''.join('#include <%s>\n' % h for h in INC)
        prog += '\n'.join(lines[:cut]) + '\nint\nmain(void)\n{\n' + '\n'.join(lines[cut:]) + '\nreturn 0;\n}\n'
    c = os.path.join(out, name + '.c')
    open(c, 'w').write(prog)
    exe = os.path.join(out, name)
    r = subprocess.run(['cc', '-std=c11', '-D_POSIX_C_SOURCE=200809L', '-Wall', '-Wextra',
                        '-Werror', '-Wno-unused-variable', '-Wno-unused-but-set-variable'] + extra + cf +
                       [c, '-o', exe] + lf + ['-Wl,-rpath,' + prefix + '/lib', '-lpthread'],
                       capture_output=True, text=True)
    if r.returncode:
        print('%-24s BUILD FAILED\n%s' % (name, r.stderr)); fail += 1; continue
    r = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    ok = r.returncode == 0
    print('%-24s %s (exit %d)%s' % (name, 'ok' if ok else 'RUN FAILED', r.returncode,
          '' if ok else '\n' + r.stdout + r.stderr))
    fail += not ok
sys.exit(1 if fail else 0)
