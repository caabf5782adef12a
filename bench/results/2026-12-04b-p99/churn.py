# What the nginx floor leaves behind: 400 KB files written and unlinked for N s, 2 processes.
import os, sys, time, multiprocessing
def run(i, secs):
    data = os.urandom(409600); end = time.time() + secs; n = 0
    while time.time() < end:
        p = f"/tmp/churn-{i}-{n % 64}"; fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, data); os.close(fd); os.unlink(p); n += 1
        if n % 22 == 0: time.sleep(max(0, (n / 2200) - (time.time() - (end - secs))))
    print(i, n / secs, "files/s")
ps = [multiprocessing.Process(target=run, args=(i, float(sys.argv[1]))) for i in range(2)]
[p.start() for p in ps]; [p.join() for p in ps]
