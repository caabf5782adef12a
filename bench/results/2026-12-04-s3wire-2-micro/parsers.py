import timeit, h11, httptools
ANSWER = (b"HTTP/1.1 200 OK\r\nServer: AmazonS3\r\nDate: Fri, 04 Dec 2026 01:00:00 GMT\r\n"
          b"x-amz-id-2: Zx9d8rnAvoo8s0tJxqkH2zWk1dHgIdf9WoLk3I9AlA6v0ZfE9KjU3hq8IPg=\r\n"
          b"x-amz-request-id: 4VZ9Z3M5T9B4K1Q2\r\nx-amz-server-side-encryption: AES256\r\n"
          b"ETag: \"1b2cf535f27731c974343645a3985328\"\r\nContent-Length: 0\r\n\r\n")
class P:
    def __init__(self): self.h = {}; self.done = False
    def on_status(self, s): self.phrase = s
    def on_header(self, n, v): self.h[n.lower()] = v
    def on_message_complete(self): self.done = True
def with_httptools():
    p = P(); parser = httptools.HttpResponseParser(p); parser.feed_data(ANSWER)
    assert p.done and parser.get_status_code() == 200
def with_h11():
    c = h11.Connection(h11.CLIENT)
    c.send(h11.Request(method="PUT", target="/b/k", headers=[("Host", "h"), ("Content-Length", "0")]))
    c.send(h11.EndOfMessage())
    c.receive_data(ANSWER)
    r = c.next_event(); assert r.status_code == 200
    assert isinstance(c.next_event(), h11.EndOfMessage)
for f in (with_httptools, with_h11):
    n = 20000
    t = min(timeit.repeat(f, number=n, repeat=5)) / n
    print(f.__name__, f"{t*1e6:.1f} µs per answer (parser made per answer)")
