import sys, time, gc, tempfile, argparse
sys.path.insert(0, '.')
sys.argv=['x','--payloads','/tmp/intake-prof/scratch/payloads']
import bench.request_overhead as ro
from bench.payloads import read_payload
args=argparse.Namespace(metrics='none', log_level='INFO', rules='accept-all')
scratch=tempfile.mkdtemp(prefix='intake-gc-')
import os
from twisted.logger import globalLogBeginner
from antenna_tw.logs import make_observer
c=ro.build(args, scratch)
site=c.site
body, headers = read_payload('/tmp/intake-prof/scratch/payloads', '400k')
chunks=ro.wire_request(body, headers)
for _ in range(200): ro.serve_one(site, chunks)
print('objects tracked', len(gc.get_objects()), 'thresholds', gc.get_threshold())
pauses={0:[],1:[],2:[]}; st={}
def cb(phase, info):
    if phase=='start': st['t']=time.perf_counter()
    else: pauses[info['generation']].append(time.perf_counter()-st['t'])
gc.callbacks.append(cb)
N=3000
t=time.perf_counter()
for _ in range(N): ro.serve_one(site, chunks)
el=time.perf_counter()-t
gc.callbacks.remove(cb)
print(f'{N} requests {el/N*1e6:.0f} us each')
for g,p in pauses.items():
    if p: print(g, len(p), 'per 1000 req', round(len(p)/N*1000,1), 'mean ms', round(sum(p)/len(p)*1e3,3), 'max ms', round(max(p)*1e3,3), 'total us/req', round(sum(p)/N*1e6,1))
t=time.perf_counter(); gc.collect(); print('full collect ms', (time.perf_counter()-t)*1e3)
