import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import org.apache.zookeeper.AddWatchMode;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Op;
import org.apache.zookeeper.OpResult;
import org.apache.zookeeper.WatchedEvent;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.Watcher.Event.EventType;
import org.apache.zookeeper.Watcher.Event.KeeperState;
import org.apache.zookeeper.Watcher.WatcherType;
import org.apache.zookeeper.ZooDefs.Ids;
import org.apache.zookeeper.ZooDefs.Perms;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.admin.ZooKeeperAdmin;
import org.apache.zookeeper.client.ZKClientConfig;
import org.apache.zookeeper.data.ACL;
import org.apache.zookeeper.data.ClientInfo;
import org.apache.zookeeper.data.Id;
import org.apache.zookeeper.data.Stat;

/**
 * Drives every client operation through Apache's own Java client against the server named on the command
 * line, printing one deterministic line per operation and per watch event, so that the output for zkpy can be
 * compared line by line with the output for Apache ZooKeeper 3.8.
 *
 * <p>Usage: java -cp zookeeper.jar:... ZkOps HOST:PORT
 *
 * <p>Every wait is bounded: a missing event prints "TIMEOUT", a step that hangs prints "STEP TIMEOUT", a
 * request the server never answers fails with REQUESTTIMEOUT (zookeeper.request.timeout), and steps left
 * when the whole run has taken RUN_WAIT_S print "SKIPPED". Connection state
 * changes nobody asked for (Disconnected, Expired, ...) are printed after the step they happened in, the way
 * zkCli shows them: that is how a reply the client cannot parse shows up (the client drops the connection).
 *
 * <p>The main client "zk" talks to the server through a small TCP proxy in this program, so that the
 * connection can be cut and the client's watches re-sent with setWatches/setWatches2 on reconnect. The
 * second client "other" connects directly and makes the changes that fire zk's watches.
 */
public final class ZkOps {
    static final int EVENT_WAIT_S = 5;
    static final int SWEEP_WAIT_S = 15;
    static final int STEP_WAIT_S = 40;
    static final int RUN_WAIT_S = 240;
    static final int SESSION_TIMEOUT_MS = 30000;
    static final int REQUEST_TIMEOUT_MS = 8000;
    static final int QUIET_MS = 300;
    static final List<ACL> OPEN = Ids.OPEN_ACL_UNSAFE;

    /** Watch events (type != None) of every watcher, in the order the client delivered them. */
    static final BlockingQueue<String> EVENTS = new LinkedBlockingQueue<>();
    /** Connection state changes of every client (consecutive repeats dropped). */
    static final BlockingQueue<String> STATES = new LinkedBlockingQueue<>();
    /** The output lines of the step running on the current thread. */
    static final ThreadLocal<List<String>> LINES = new ThreadLocal<>();

    final String server;
    final long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(RUN_WAIT_S);
    Proxy proxy;
    ZooKeeper zk;
    ZooKeeper other;

    ZkOps(String server) {
        this.server = server;
    }

    // ---------------------------------------------------------------------------------------------- plumbing

    /** A watcher that records what it sees under a name: watch events into EVENTS, states into STATES. */
    static final class Recorder implements Watcher {
        final String name;
        final boolean clientStates;
        KeeperState last;

        /** A watcher for watch events only (the client gives state changes to every watcher it holds). */
        Recorder(String name) {
            this(name, false);
        }

        /** With clientStates, the client's default watcher: it records the connection's state changes. */
        Recorder(String name, boolean clientStates) {
            this.name = name;
            this.clientStates = clientStates;
        }

        @Override
        public synchronized void process(WatchedEvent e) {
            if (e.getType() != EventType.None) {
                EVENTS.add(name + " " + e.getType() + " " + e.getPath());
            } else if (clientStates && e.getState() != last) {
                last = e.getState();
                STATES.add(name + " " + e.getState());
            }
        }
    }

    /** A loopback TCP proxy to the server whose connections can be cut and new ones refused. */
    static final class Proxy {
        final ServerSocket listener;
        final String host;
        final int port;
        final List<Socket> open = Collections.synchronizedList(new ArrayList<>());
        volatile boolean refusing;

        Proxy(String target) throws IOException {
            int colon = target.lastIndexOf(':');
            host = target.substring(0, colon);
            port = Integer.parseInt(target.substring(colon + 1));
            listener = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
            daemon(this::acceptLoop);
        }

        String address() {
            return "127.0.0.1:" + listener.getLocalPort();
        }

        void acceptLoop() {
            while (true) {
                try {
                    Socket client = listener.accept();
                    if (refusing) {
                        client.close();
                        continue;
                    }
                    Socket upstream = new Socket(host, port);
                    client.setTcpNoDelay(true);
                    upstream.setTcpNoDelay(true);
                    open.add(client);
                    open.add(upstream);
                    daemon(() -> pump(client, upstream));
                    daemon(() -> pump(upstream, client));
                } catch (IOException e) {
                    return;
                }
            }
        }

        static void pump(Socket from, Socket to) {
            byte[] buf = new byte[65536];
            try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
                int n;
                while ((n = in.read(buf)) >= 0) {
                    out.write(buf, 0, n);
                    out.flush();
                }
            } catch (IOException e) {
                // the other direction or cut() closed it
            } finally {
                closeQuietly(from);
                closeQuietly(to);
            }
        }

        /** Drop every proxied connection, and refuse new ones while `refuse` is set. */
        void cut(boolean refuse) {
            refusing = refuse;
            synchronized (open) {
                open.forEach(Proxy::closeQuietly);
                open.clear();
            }
        }

        void allow() {
            refusing = false;
        }

        static void closeQuietly(Socket s) {
            try {
                s.close();
            } catch (IOException e) {
                // already closed
            }
        }
    }

    static void daemon(Runnable r) {
        Thread t = new Thread(r);
        t.setDaemon(true);
        t.start();
    }

    interface Step {
        void run() throws Exception;
    }

    interface Call {
        String run() throws Exception;
    }

    /** Run one step on its own thread with a time limit; print its lines, then any unasked state changes. */
    void step(String name, Step body) throws InterruptedException {
        if (System.nanoTime() > deadline) {
            System.out.println(name + ": SKIPPED (run took longer than " + RUN_WAIT_S + "s)");
            return;
        }
        List<String> lines = Collections.synchronizedList(new ArrayList<>());
        CountDownLatch done = new CountDownLatch(1);
        Thread t = new Thread(() -> {
            LINES.set(lines);
            try {
                body.run();
            } catch (Throwable e) {
                out("step failed: " + describe(e));
            } finally {
                done.countDown();
            }
        });
        t.setDaemon(true);
        t.start();
        boolean finished = done.await(STEP_WAIT_S, TimeUnit.SECONDS);
        synchronized (lines) {
            for (String line : lines) {
                System.out.println(name + ": " + line);
            }
        }
        if (!finished) {
            System.out.println(name + ": STEP TIMEOUT after " + STEP_WAIT_S + "s");
        }
        String state;
        while ((state = STATES.poll()) != null) {
            System.out.println(name + ": !! connection state changed: " + state);
        }
        System.out.flush();
    }

    static void out(String line) {
        LINES.get().add(line);
    }

    /** One operation: its label and either its result or the error it failed with. */
    static void op(String label, Call call) {
        try {
            out(label + " -> " + call.run());
        } catch (Exception e) {
            out(label + " -> " + describe(e));
        }
    }

    static String describe(Throwable e) {
        if (e instanceof KeeperException) {
            return "ERR " + ((KeeperException) e).code();
        }
        e.printStackTrace();
        return "EXCEPTION " + e.getClass().getSimpleName();
    }

    /** Wait for exactly n watch events, printing each in arrival order (or TIMEOUT). */
    static void events(int n) throws InterruptedException {
        events(n, EVENT_WAIT_S);
    }

    static void events(int n, int waitSeconds) throws InterruptedException {
        for (int i = 0; i < n; i++) {
            String e = EVENTS.poll(waitSeconds, TimeUnit.SECONDS);
            out("event " + (e == null ? "TIMEOUT" : e));
        }
    }

    /** Wait for n watch events that different watchers get in no fixed order; print them sorted. */
    static void eventsSorted(int n) throws InterruptedException {
        List<String> got = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            String e = EVENTS.poll(EVENT_WAIT_S, TimeUnit.SECONDS);
            got.add(e == null ? "TIMEOUT" : e);
        }
        Collections.sort(got);
        got.forEach(e -> out("event " + e));
    }

    /** Check that no watch event arrives for a short while (a one-shot watch must not fire twice). */
    static void quiet() throws InterruptedException {
        String e = EVENTS.poll(QUIET_MS, TimeUnit.MILLISECONDS);
        out(e == null ? "no event" : "UNEXPECTED event " + e);
        while ((e = EVENTS.poll()) != null) {
            out("UNEXPECTED event " + e);
        }
    }

    /** Wait for n connection state changes (of any client), printing each. */
    static void states(int n) throws InterruptedException {
        for (int i = 0; i < n; i++) {
            String s = STATES.poll(SESSION_TIMEOUT_MS / 1000, TimeUnit.SECONDS);
            out("state " + (s == null ? "TIMEOUT" : s));
        }
    }

    String stat(Stat s) {
        if (s == null) {
            return "stat=null";
        }
        long owner = s.getEphemeralOwner();
        String who = owner == 0 ? "0"
                : owner == zk.getSessionId() ? "zk"
                : owner == other.getSessionId() ? "other" : String.format("0x%x", owner);
        return String.format("version=%d cversion=%d aversion=%d dataLength=%d numChildren=%d owner=%s"
                        + " mzxid==czxid:%b pzxid==czxid:%b",
                s.getVersion(), s.getCversion(), s.getAversion(), s.getDataLength(), s.getNumChildren(), who,
                s.getMzxid() == s.getCzxid(), s.getPzxid() == s.getCzxid());
    }

    static byte[] b(String s) {
        return s == null ? null : s.getBytes(StandardCharsets.UTF_8);
    }

    static String str(byte[] data) {
        return data == null ? "null" : "'" + new String(data, StandardCharsets.UTF_8) + "'";
    }

    static String sorted(List<String> items) {
        List<String> copy = new ArrayList<>(items);
        Collections.sort(copy);
        return copy.toString();
    }

    static String acls(List<ACL> acls) {
        List<String> parts = new ArrayList<>();
        for (ACL a : acls) {
            parts.add(a.getId().getScheme() + ":" + a.getId().getId() + "=" + a.getPerms());
        }
        return parts.toString();
    }

    static String results(List<OpResult> results) {
        List<String> parts = new ArrayList<>();
        for (OpResult r : results) {
            parts.add(result(r));
        }
        return String.join(", ", parts);
    }

    static String result(OpResult r) {
        if (r instanceof OpResult.CreateResult) {
            OpResult.CreateResult c = (OpResult.CreateResult) r;
            return "create " + c.getPath() + (c.getStat() == null ? "" : " version=" + c.getStat().getVersion());
        } else if (r instanceof OpResult.SetDataResult) {
            return "setData version=" + ((OpResult.SetDataResult) r).getStat().getVersion();
        } else if (r instanceof OpResult.DeleteResult) {
            return "delete";
        } else if (r instanceof OpResult.CheckResult) {
            return "check";
        } else if (r instanceof OpResult.GetDataResult) {
            OpResult.GetDataResult g = (OpResult.GetDataResult) r;
            return "getData " + str(g.getData()) + " version=" + g.getStat().getVersion();
        } else if (r instanceof OpResult.GetChildrenResult) {
            return "getChildren " + sorted(((OpResult.GetChildrenResult) r).getChildren());
        } else if (r instanceof OpResult.ErrorResult) {
            return "error " + KeeperException.Code.get(((OpResult.ErrorResult) r).getErr());
        }
        return r.getClass().getSimpleName();
    }

    /** Sorted: Apache keeps a connection's identities in a hash set, so their order means nothing. */
    static String whoAmI(ZooKeeper client) throws InterruptedException {
        List<String> ids = new ArrayList<>();
        for (ClientInfo info : client.whoAmI()) {
            ids.add(info.getAuthScheme() + ":" + info.getUser());
        }
        return sorted(ids);
    }

    static ZKClientConfig clientConfig() {
        ZKClientConfig config = new ZKClientConfig();
        config.setProperty(ZKClientConfig.ENABLE_CLIENT_SASL_KEY, "false");
        config.setProperty(ZKClientConfig.ZOOKEEPER_REQUEST_TIMEOUT, String.valueOf(REQUEST_TIMEOUT_MS));
        return config;
    }

    static ZooKeeper connect(String address, Watcher watcher) throws IOException {
        return new ZooKeeper(address, SESSION_TIMEOUT_MS, watcher, clientConfig());
    }

    // ------------------------------------------------------------------------------------------------- steps

    void connectClients() throws Exception {
        proxy = new Proxy(server);
        zk = connect(proxy.address(), new Recorder("zk", true));
        states(1);
        other = connect(server, new Recorder("other", true));
        states(1);
        op("distinct sessions", () -> String.valueOf(zk.getSessionId() != other.getSessionId()));
    }

    void createPersistent() {
        op("create /jt", () -> zk.create("/jt", b("root"), OPEN, CreateMode.PERSISTENT));
        op("create /jt again", () -> zk.create("/jt", b("x"), OPEN, CreateMode.PERSISTENT));
        op("create /nope/x", () -> zk.create("/nope/x", b("x"), OPEN, CreateMode.PERSISTENT));
        op("create /jt/nulldata", () -> zk.create("/jt/nulldata", null, OPEN, CreateMode.PERSISTENT));
        op("getData /jt/nulldata", () -> str(zk.getData("/jt/nulldata", false, null)));
        op("create /jt/empty", () -> zk.create("/jt/empty", new byte[0], OPEN, CreateMode.PERSISTENT));
        op("getData /jt/empty", () -> str(zk.getData("/jt/empty", false, null)));
        op("exists /jt", () -> stat(zk.exists("/jt", false)));
    }

    void createEphemeral() {
        op("create /jt/eph", () -> zk.create("/jt/eph", b("e"), OPEN, CreateMode.EPHEMERAL));
        op("exists /jt/eph", () -> stat(zk.exists("/jt/eph", false)));
        op("create /jt/eph/child", () -> zk.create("/jt/eph/child", b("c"), OPEN, CreateMode.PERSISTENT));
    }

    void createSequential() {
        op("create /jt/seq", () -> zk.create("/jt/seq", null, OPEN, CreateMode.PERSISTENT));
        op("create s- 1", () -> zk.create("/jt/seq/s-", b("1"), OPEN, CreateMode.PERSISTENT_SEQUENTIAL));
        op("create s- 2", () -> zk.create("/jt/seq/s-", b("2"), OPEN, CreateMode.PERSISTENT_SEQUENTIAL));
        op("delete s-0000000000", () -> {
            zk.delete("/jt/seq/s-0000000000", -1);
            return "ok";
        });
        op("create s- 3", () -> zk.create("/jt/seq/s-", b("3"), OPEN, CreateMode.PERSISTENT_SEQUENTIAL));
        op("create e-", () -> zk.create("/jt/seq/e-", b("4"), OPEN, CreateMode.EPHEMERAL_SEQUENTIAL));
        op("getChildren /jt/seq", () -> sorted(zk.getChildren("/jt/seq", false)));
        op("exists /jt/seq", () -> stat(zk.exists("/jt/seq", false)));
    }

    void createContainer() {
        Stat s = new Stat();
        op("create /jt/cont", () -> zk.create("/jt/cont", b("c"), OPEN, CreateMode.CONTAINER, s) + " " + stat(s));
        op("exists /jt/cont", () -> stat(zk.exists("/jt/cont", false)));
    }

    void createTtl() {
        Stat s = new Stat();
        op("create /jt/ttl", () -> zk.create("/jt/ttl", b("t"), OPEN, CreateMode.PERSISTENT_WITH_TTL, s, 600000)
                + " " + stat(s));
        op("exists /jt/ttl", () -> stat(zk.exists("/jt/ttl", false)));
        op("create /jt/ttl/t-", () -> zk.create("/jt/ttl/t-", b("t"), OPEN,
                CreateMode.PERSISTENT_SEQUENTIAL_WITH_TTL, s, 600000) + " " + stat(s));
        op("create /jt/ttl/t- again", () -> zk.create("/jt/ttl/t-", b("t"), OPEN,
                CreateMode.PERSISTENT_SEQUENTIAL_WITH_TTL, s, 600000) + " " + stat(s));
    }

    void create2() {
        Stat s = new Stat();
        op("create2 /jt/c2", () -> zk.create("/jt/c2", b("hello"), OPEN, CreateMode.PERSISTENT, s) + " " + stat(s));
        op("create2 /jt/c2 again", () -> zk.create("/jt/c2", b("x"), OPEN, CreateMode.PERSISTENT, s));
        op("exists /jt after", () -> stat(zk.exists("/jt", false)));
    }

    void getDataWatch() throws Exception {
        Recorder w = new Recorder("getDataWatch");
        Stat s = new Stat();
        op("getData /jt/c2 watch", () -> str(zk.getData("/jt/c2", w, s)) + " " + stat(s));
        op("other setData /jt/c2", () -> stat(other.setData("/jt/c2", b("v1"), -1)));
        events(1);
        op("other setData /jt/c2 again", () -> stat(other.setData("/jt/c2", b("v2"), -1)));
        quiet();
        op("getData /jt/missing", () -> str(zk.getData("/jt/missing", w, s)));
        op("getData /jt/c2 default watcher", () -> str(zk.getData("/jt/c2", true, s)) + " " + stat(s));
        op("other setData /jt/c2 third", () -> stat(other.setData("/jt/c2", b("v3"), -1)));
        events(1);
    }

    void setDataVersions() {
        op("setData /jt/c2 version 3", () -> stat(zk.setData("/jt/c2", b("v4"), 3)));
        op("setData /jt/c2 version 3 again", () -> stat(zk.setData("/jt/c2", b("v5"), 3)));
        op("setData /jt/c2 version -1", () -> stat(zk.setData("/jt/c2", b("v5"), -1)));
        op("setData /jt/missing", () -> stat(zk.setData("/jt/missing", b("x"), -1)));
        op("getData /jt/c2", () -> str(zk.getData("/jt/c2", false, null)));
    }

    void existsWatch() throws Exception {
        Recorder w = new Recorder("existsWatch");
        op("exists /jt/ex watch", () -> stat(zk.exists("/jt/ex", w)));
        op("other create /jt/ex", () -> other.create("/jt/ex", b("x"), OPEN, CreateMode.PERSISTENT));
        events(1);
        op("exists /jt/ex watch again", () -> stat(zk.exists("/jt/ex", w)));
        op("other setData /jt/ex", () -> stat(other.setData("/jt/ex", b("y"), -1)));
        events(1);
        op("exists /jt/ex watch third", () -> stat(zk.exists("/jt/ex", w)));
        op("other delete /jt/ex", () -> {
            other.delete("/jt/ex", -1);
            return "ok";
        });
        events(1);
    }

    void getChildrenWatch() throws Exception {
        Recorder w = new Recorder("childWatch");
        Stat s = new Stat();
        op("create /jt/kids", () -> zk.create("/jt/kids", null, OPEN, CreateMode.PERSISTENT));
        op("getChildren /jt/kids watch", () -> sorted(zk.getChildren("/jt/kids", w, s)) + " " + stat(s));
        op("other create /jt/kids/a", () -> other.create("/jt/kids/a", null, OPEN, CreateMode.PERSISTENT));
        events(1);
        op("getChildren /jt/kids watch again", () -> sorted(zk.getChildren("/jt/kids", w, s)) + " " + stat(s));
        op("other setData /jt/kids/a", () -> stat(other.setData("/jt/kids/a", b("y"), -1)));
        quiet();
        op("other create /jt/kids/b", () -> other.create("/jt/kids/b", null, OPEN, CreateMode.EPHEMERAL));
        events(1);
        op("getChildren /jt/kids (getChildren)", () -> sorted(zk.getChildren("/jt/kids", w)));
        op("other delete /jt/kids/a", () -> {
            other.delete("/jt/kids/a", -1);
            return "ok";
        });
        events(1);
        op("getChildren /jt/kids", () -> sorted(zk.getChildren("/jt/kids", false, s)) + " " + stat(s));
        op("getChildren /jt/missing", () -> sorted(zk.getChildren("/jt/missing", w)));
    }

    void deleteWithVersion() throws Exception {
        Recorder data = new Recorder("deleteDataWatch");
        Recorder kids = new Recorder("deleteChildWatch");
        op("create /jt/del", () -> zk.create("/jt/del", b("d"), OPEN, CreateMode.PERSISTENT));
        op("create /jt/del/x", () -> zk.create("/jt/del/x", b("d"), OPEN, CreateMode.PERSISTENT));
        op("delete /jt/del not empty", () -> {
            zk.delete("/jt/del", -1);
            return "ok";
        });
        op("getData /jt/del/x watch", () -> str(zk.getData("/jt/del/x", data, null)));
        op("getChildren /jt/del watch", () -> sorted(zk.getChildren("/jt/del", kids)));
        op("delete /jt/del/x version 5", () -> {
            zk.delete("/jt/del/x", 5);
            return "ok";
        });
        op("other delete /jt/del/x version 0", () -> {
            other.delete("/jt/del/x", 0);
            return "ok";
        });
        events(2);
        op("delete /jt/del/x again", () -> {
            zk.delete("/jt/del/x", -1);
            return "ok";
        });
        op("exists /jt/del", () -> stat(zk.exists("/jt/del", false)));
        op("delete /jt/del version 0", () -> {
            zk.delete("/jt/del", 0);
            return "ok";
        });
    }

    void multiSuccess() throws Exception {
        Recorder w = new Recorder("multiWatch");
        op("exists /jt/m watch", () -> stat(zk.exists("/jt/m", w)));
        op("multi", () -> results(zk.multi(List.of(
                Op.create("/jt/m", b("m"), OPEN, CreateMode.PERSISTENT),
                Op.create("/jt/m/a", b("a"), OPEN, CreateMode.EPHEMERAL),
                Op.create("/jt/m/s-", b("s"), OPEN, CreateMode.PERSISTENT_SEQUENTIAL),
                Op.setData("/jt/m", b("m2"), 0),
                Op.check("/jt/m", 1),
                Op.delete("/jt/m/a", 0)))));
        events(1);
        op("getChildren /jt/m", () -> sorted(zk.getChildren("/jt/m", false)));
        op("exists /jt/m", () -> stat(zk.exists("/jt/m", false)));
        op("multi container+ttl", () -> results(zk.multi(List.of(
                Op.create("/jt/m/c", b("c"), OPEN, CreateMode.CONTAINER),
                Op.create("/jt/m/t", b("t"), OPEN, CreateMode.PERSISTENT_WITH_TTL, 600000)))));
        op("multi empty", () -> results(zk.multi(List.of())));
    }

    void multiFailure() {
        op("multi bad version", () -> {
            try {
                return results(zk.multi(List.of(
                        Op.create("/jt/m2", b("x"), OPEN, CreateMode.PERSISTENT),
                        Op.setData("/jt/m", b("x"), 99),
                        Op.create("/jt/m3", b("x"), OPEN, CreateMode.PERSISTENT))));
            } catch (KeeperException e) {
                return "ERR " + e.code() + " path=" + e.getPath() + " results: " + results(e.getResults());
            }
        });
        op("multi failed check", () -> {
            try {
                return results(zk.multi(List.of(
                        Op.check("/jt/m", 0),
                        Op.delete("/jt/m", -1))));
            } catch (KeeperException e) {
                return "ERR " + e.code() + " results: " + results(e.getResults());
            }
        });
        op("multi node exists", () -> {
            try {
                return results(zk.multi(List.of(
                        Op.setData("/jt/m", b("x"), -1),
                        Op.create("/jt/m", b("x"), OPEN, CreateMode.PERSISTENT))));
            } catch (KeeperException e) {
                return "ERR " + e.code() + " results: " + results(e.getResults());
            }
        });
        op("exists /jt/m2 (rolled back)", () -> stat(zk.exists("/jt/m2", false)));
        op("exists /jt/m", () -> stat(zk.exists("/jt/m", false)));
    }

    void multiRead() {
        op("multiRead", () -> results(zk.multi(List.of(
                Op.getData("/jt/c2"),
                Op.getChildren("/jt/seq"),
                Op.getData("/jt/missing"),
                Op.getChildren("/jt/missing"),
                Op.getData("/jt/nulldata")))));
    }

    void ephemerals() {
        op("getEphemerals", () -> sorted(zk.getEphemerals()));
        op("getEphemerals /jt/seq", () -> sorted(zk.getEphemerals("/jt/seq")));
        op("getEphemerals /jt/s", () -> sorted(zk.getEphemerals("/jt/s")));
        op("other getEphemerals", () -> sorted(other.getEphemerals()));
    }

    void allChildrenNumber() {
        op("getAllChildrenNumber /jt/seq", () -> String.valueOf(zk.getAllChildrenNumber("/jt/seq")));
        op("getAllChildrenNumber /jt", () -> String.valueOf(zk.getAllChildrenNumber("/jt")));
        op("getAllChildrenNumber /", () -> String.valueOf(zk.getAllChildrenNumber("/")));
        op("getAllChildrenNumber /jt/missing", () -> String.valueOf(zk.getAllChildrenNumber("/jt/missing")));
    }

    void addWatchPersistent() throws Exception {
        Recorder w = new Recorder("persistent");
        op("addWatch /jt/pw PERSISTENT", () -> {
            zk.addWatch("/jt/pw", w, AddWatchMode.PERSISTENT);
            return "ok";
        });
        op("other create /jt/pw", () -> other.create("/jt/pw", b("p"), OPEN, CreateMode.PERSISTENT));
        op("other setData /jt/pw", () -> stat(other.setData("/jt/pw", b("q"), -1)));
        op("other create /jt/pw/c", () -> other.create("/jt/pw/c", b("c"), OPEN, CreateMode.PERSISTENT));
        op("other setData /jt/pw/c", () -> stat(other.setData("/jt/pw/c", b("d"), -1)));
        op("other delete /jt/pw/c", () -> {
            other.delete("/jt/pw/c", -1);
            return "ok";
        });
        op("other delete /jt/pw", () -> {
            other.delete("/jt/pw", -1);
            return "ok";
        });
        op("other create /jt/pw again", () -> other.create("/jt/pw", b("p"), OPEN, CreateMode.PERSISTENT));
        events(6);
        quiet();
    }

    void addWatchRecursive() throws Exception {
        Recorder w = new Recorder("recursive");
        op("addWatch /jt/rw PERSISTENT_RECURSIVE", () -> {
            zk.addWatch("/jt/rw", w, AddWatchMode.PERSISTENT_RECURSIVE);
            return "ok";
        });
        op("other create /jt/rw", () -> other.create("/jt/rw", b("r"), OPEN, CreateMode.PERSISTENT));
        op("other create /jt/rw/a", () -> other.create("/jt/rw/a", b("a"), OPEN, CreateMode.PERSISTENT));
        op("other create /jt/rw/a/b", () -> other.create("/jt/rw/a/b", b("b"), OPEN, CreateMode.PERSISTENT));
        op("other setData /jt/rw/a/b", () -> stat(other.setData("/jt/rw/a/b", b("c"), -1)));
        op("other delete /jt/rw/a/b", () -> {
            other.delete("/jt/rw/a/b", -1);
            return "ok";
        });
        op("other setData /jt/rw", () -> stat(other.setData("/jt/rw", b("s"), -1)));
        op("other create /jt/rwx (sibling)", () -> other.create("/jt/rwx", b("x"), OPEN, CreateMode.PERSISTENT));
        events(6);
        quiet();
    }

    void addWatchOnDefaultWatcher() throws Exception {
        op("addWatch /jt/dw PERSISTENT default watcher", () -> {
            zk.addWatch("/jt/dw", AddWatchMode.PERSISTENT);
            return "ok";
        });
        op("other create /jt/dw", () -> other.create("/jt/dw", b("p"), OPEN, CreateMode.PERSISTENT));
        events(1);
        op("removeAllWatches /jt/dw", () -> {
            zk.removeAllWatches("/jt/dw", WatcherType.Any, false);
            return "ok";
        });
        events(1);
        op("other setData /jt/dw", () -> stat(other.setData("/jt/dw", b("q"), -1)));
        quiet();
    }

    void removeWatches() throws Exception {
        Recorder d = new Recorder("removeData");
        Recorder e = new Recorder("removeData2");
        Recorder c = new Recorder("removeChild");
        op("create /jt/rm", () -> zk.create("/jt/rm", b("r"), OPEN, CreateMode.PERSISTENT));
        op("getData /jt/rm watch", () -> str(zk.getData("/jt/rm", d, null)));
        op("removeWatches /jt/rm Data", () -> {
            zk.removeWatches("/jt/rm", d, WatcherType.Data, false);
            return "ok";
        });
        events(1);
        op("other setData /jt/rm", () -> stat(other.setData("/jt/rm", b("s"), -1)));
        quiet();
        op("removeWatches /jt/rm Data again", () -> {
            zk.removeWatches("/jt/rm", d, WatcherType.Data, false);
            return "ok";
        });
        op("getChildren /jt/rm watch", () -> sorted(zk.getChildren("/jt/rm", c)));
        op("removeWatches /jt/rm Data for a child watcher", () -> {
            zk.removeWatches("/jt/rm", c, WatcherType.Data, false);
            return "ok";
        });
        op("removeWatches /jt/rm Children", () -> {
            zk.removeWatches("/jt/rm", c, WatcherType.Children, false);
            return "ok";
        });
        events(1);
        op("getData /jt/rm watch", () -> str(zk.getData("/jt/rm", e, null)));
        op("getChildren /jt/rm watch", () -> sorted(zk.getChildren("/jt/rm", c)));
        op("removeAllWatches /jt/rm Any", () -> {
            zk.removeAllWatches("/jt/rm", WatcherType.Any, false);
            return "ok";
        });
        eventsSorted(2);
        op("other create /jt/rm/x", () -> other.create("/jt/rm/x", null, OPEN, CreateMode.PERSISTENT));
        quiet();
        op("removeAllWatches /jt/rm Any again", () -> {
            zk.removeAllWatches("/jt/rm", WatcherType.Any, false);
            return "ok";
        });
        op("removeAllWatches /jt/missing", () -> {
            zk.removeAllWatches("/jt/missing", WatcherType.Any, false);
            return "ok";
        });
    }

    void removePersistentWatches() throws Exception {
        Recorder w = new Recorder("persistentRemoved");
        op("addWatch /jt/rm PERSISTENT_RECURSIVE", () -> {
            zk.addWatch("/jt/rm", w, AddWatchMode.PERSISTENT_RECURSIVE);
            return "ok";
        });
        op("other setData /jt/rm/x", () -> stat(other.setData("/jt/rm/x", b("y"), -1)));
        events(1);
        op("removeWatches /jt/rm Any", () -> {
            zk.removeWatches("/jt/rm", w, WatcherType.Any, false);
            return "ok";
        });
        events(1);
        op("other setData /jt/rm/x again", () -> stat(other.setData("/jt/rm/x", b("z"), -1)));
        quiet();
    }

    void whoAmIBefore() {
        op("whoAmI zk", () -> whoAmI(zk));
        op("whoAmI other", () -> whoAmI(other));
    }

    void acl() throws Exception {
        op("create /jt/acl creator-all without auth", () ->
                zk.create("/jt/acl", b("a"), Ids.CREATOR_ALL_ACL, CreateMode.PERSISTENT));
        zk.addAuthInfo("digest", b("alice:secret"));
        op("whoAmI zk after addAuthInfo", () -> whoAmI(zk));
        op("create /jt/acl creator-all", () ->
                zk.create("/jt/acl", b("a"), Ids.CREATOR_ALL_ACL, CreateMode.PERSISTENT));
        Stat s = new Stat();
        op("getACL /jt/acl", () -> acls(zk.getACL("/jt/acl", s)) + " " + stat(s));
        op("other getData /jt/acl", () -> str(other.getData("/jt/acl", false, null)));
        op("other setData /jt/acl", () -> stat(other.setData("/jt/acl", b("x"), -1)));
        op("other exists /jt/acl", () -> stat(other.exists("/jt/acl", false)));
        op("other getACL /jt/acl", () -> acls(other.getACL("/jt/acl", new Stat())));
        op("other getChildren /jt/acl", () -> sorted(other.getChildren("/jt/acl", false)));
        List<ACL> readable = new ArrayList<>(zk.getACL("/jt/acl", new Stat()));
        readable.add(new ACL(Perms.READ, Ids.ANYONE_ID_UNSAFE));
        op("setACL /jt/acl version 0", () -> stat(zk.setACL("/jt/acl", readable, 0)));
        op("setACL /jt/acl version 0 again", () -> stat(zk.setACL("/jt/acl", readable, 0)));
        op("getACL /jt/acl", () -> acls(zk.getACL("/jt/acl", s)) + " " + stat(s));
        op("other getData /jt/acl", () -> str(other.getData("/jt/acl", false, null)));
        op("other setData /jt/acl", () -> stat(other.setData("/jt/acl", b("x"), -1)));
        op("other create /jt/acl/kid", () -> other.create("/jt/acl/kid", null, OPEN, CreateMode.PERSISTENT));
        op("other setACL /jt/acl", () -> stat(other.setACL("/jt/acl", OPEN, -1)));
        op("setData /jt/acl", () -> stat(zk.setData("/jt/acl", b("b"), -1)));
        op("create /jt/acl/kid", () -> zk.create("/jt/acl/kid", null, OPEN, CreateMode.PERSISTENT));
        other.addAuthInfo("digest", b("alice:wrong"));
        op("whoAmI other wrong password", () -> whoAmI(other));
        op("other setData /jt/acl wrong password", () -> stat(other.setData("/jt/acl", b("x"), -1)));
        List<ACL> ipOnly = Collections.singletonList(new ACL(Perms.ALL, new Id("ip", "10.1.2.3")));
        op("create /jt/acl-ip", () -> zk.create("/jt/acl-ip", b("i"), ipOnly, CreateMode.PERSISTENT));
        op("getData /jt/acl-ip", () -> str(zk.getData("/jt/acl-ip", false, null)));
        List<ACL> loopback = Collections.singletonList(new ACL(Perms.READ, new Id("ip", "127.0.0.1")));
        op("create /jt/acl-lo", () -> zk.create("/jt/acl-lo", b("l"), loopback, CreateMode.PERSISTENT));
        op("other getData /jt/acl-lo", () -> str(other.getData("/jt/acl-lo", false, null)));
        op("other setData /jt/acl-lo", () -> stat(other.setData("/jt/acl-lo", b("x"), -1)));
        op("setACL /jt/missing", () -> stat(zk.setACL("/jt/missing", OPEN, -1)));
        op("getACL /jt/missing", () -> acls(zk.getACL("/jt/missing", new Stat())));
        op("create bad acl scheme", () -> zk.create("/jt/acl-bad", null,
                Collections.singletonList(new ACL(Perms.ALL, new Id("nosuch", "x"))), CreateMode.PERSISTENT));
        op("getACL /", () -> acls(zk.getACL("/", new Stat())));
    }

    void sync() throws Exception {
        for (String path : List.of("/jt", "/jt/missing")) {
            CountDownLatch latch = new CountDownLatch(1);
            String[] got = new String[1];
            zk.sync(path, (rc, p, ctx) -> {
                got[0] = KeeperException.Code.get(rc) + " path=" + p;
                latch.countDown();
            }, null);
            boolean answered = latch.await(EVENT_WAIT_S, TimeUnit.SECONDS);
            out("sync " + path + " -> " + (answered ? got[0] : "TIMEOUT"));
        }
    }

    void systemTree() {
        op("getChildren /zookeeper", () -> sorted(zk.getChildren("/zookeeper", false)));
        op("getChildren /", () -> sorted(zk.getChildren("/", false)));
        for (String path : List.of("/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config")) {
            Stat s = new Stat();
            op("getACL " + path, () -> acls(zk.getACL(path, s)) + " " + stat(s));
            op("getData " + path, () -> str(zk.getData(path, false, null)));
        }
        op("setData /zookeeper/config", () -> stat(other.setData("/zookeeper/config", b("x"), -1)));
        op("setACL /zookeeper/config", () -> stat(other.setACL("/zookeeper/config", OPEN, -1)));
        op("delete /zookeeper/config", () -> {
            other.delete("/zookeeper/config", -1);
            return "ok";
        });
        op("setData /zookeeper/quota", () -> stat(other.setData("/zookeeper/quota", null, 0)));
        op("create /zookeeper/x", () -> other.create("/zookeeper/x", null, OPEN, CreateMode.PERSISTENT));
        op("delete /zookeeper/x", () -> {
            other.delete("/zookeeper/x", -1);
            return "ok";
        });
        for (String special : List.of("/zookeeper", "/zookeeper/quota", "/zookeeper/config")) {
            op("create " + special, () -> other.create(special, null, OPEN, CreateMode.PERSISTENT));
        }
        for (String special : List.of("/zookeeper", "/zookeeper/quota", "/")) {
            op("delete " + special, () -> {
                other.delete(special, -1);
                return "ok";
            });
        }
        op("getChildren /zookeeper after", () -> sorted(zk.getChildren("/zookeeper", false)));
    }

    /** getConfig reads /zookeeper/config; reconfig is refused on a standalone server. */
    void config() throws Exception {
        Stat s = new Stat();
        op("getConfig", () -> str(zk.getConfig(false, s)) + " " + stat(s));
        ZooKeeperAdmin admin = new ZooKeeperAdmin(server, SESSION_TIMEOUT_MS, new Recorder("admin", true),
                clientConfig());
        try {
            states(1);
            op("reconfig", () -> str(admin.reconfigure(null, null,
                    List.of("server.1=127.0.0.1:2888:3888;2181"), -1, new Stat())));
        } finally {
            admin.close();
            states(1);
        }
    }

    /** Watches survive a reconnect: the client re-sends them (setWatches) and misses no change. */
    void setWatchesAcrossReconnect() throws Exception {
        Recorder data = new Recorder("swData");
        Recorder exist = new Recorder("swExist");
        Recorder kids = new Recorder("swChild");
        Recorder idle = new Recorder("swIdle");
        op("create /jt/sw", () -> zk.create("/jt/sw", null, OPEN, CreateMode.PERSISTENT));
        op("create /jt/sw/a", () -> zk.create("/jt/sw/a", b("a"), OPEN, CreateMode.PERSISTENT));
        op("create /jt/sw/b", () -> zk.create("/jt/sw/b", b("b"), OPEN, CreateMode.PERSISTENT));
        op("getData /jt/sw/a watch", () -> str(zk.getData("/jt/sw/a", data, null)));
        op("exists /jt/sw/new watch", () -> stat(zk.exists("/jt/sw/new", exist)));
        op("getChildren /jt/sw watch", () -> sorted(zk.getChildren("/jt/sw", kids)));
        op("getData /jt/sw/b watch", () -> str(zk.getData("/jt/sw/b", idle, null)));
        proxy.cut(true);
        states(1);
        op("other setData /jt/sw/a", () -> stat(other.setData("/jt/sw/a", b("a2"), -1)));
        op("other create /jt/sw/new", () -> other.create("/jt/sw/new", null, OPEN, CreateMode.PERSISTENT));
        proxy.allow();
        states(1);
        events(3);
        op("other setData /jt/sw/b", () -> stat(other.setData("/jt/sw/b", b("b2"), -1)));
        events(1);
        op("getData /jt/sw/a after reconnect", () -> str(zk.getData("/jt/sw/a", false, null)));
    }

    /** Persistent watches survive a reconnect (setWatches2). */
    void setWatches2AcrossReconnect() throws Exception {
        Recorder rec = new Recorder("sw2Recursive");
        Recorder per = new Recorder("sw2Persistent");
        Recorder data = new Recorder("sw2Data");
        op("create /jt/sw2", () -> zk.create("/jt/sw2", null, OPEN, CreateMode.PERSISTENT));
        op("addWatch /jt/sw2 PERSISTENT_RECURSIVE", () -> {
            zk.addWatch("/jt/sw2", rec, AddWatchMode.PERSISTENT_RECURSIVE);
            return "ok";
        });
        op("addWatch /jt/sw2p PERSISTENT", () -> {
            zk.addWatch("/jt/sw2p", per, AddWatchMode.PERSISTENT);
            return "ok";
        });
        op("getData /jt/sw watch", () -> str(zk.getData("/jt/sw", data, null)));
        proxy.cut(true);
        states(1);
        op("other create /jt/sw2/x", () -> other.create("/jt/sw2/x", b("x"), OPEN, CreateMode.PERSISTENT));
        op("other setData /jt/sw", () -> stat(other.setData("/jt/sw", b("s"), -1)));
        proxy.allow();
        states(1);
        events(1);
        op("other setData /jt/sw2/x", () -> stat(other.setData("/jt/sw2/x", b("y"), -1)));
        op("other create /jt/sw2p", () -> other.create("/jt/sw2p", b("p"), OPEN, CreateMode.PERSISTENT));
        events(2);
        quiet();
    }

    void containerSweep() throws Exception {
        Recorder w = new Recorder("containerWatch");
        op("create /jt/cont/kid", () -> zk.create("/jt/cont/kid", null, OPEN, CreateMode.PERSISTENT));
        op("exists /jt/cont watch", () -> stat(zk.exists("/jt/cont", w)));
        op("delete /jt/cont/kid", () -> {
            zk.delete("/jt/cont/kid", -1);
            return "ok";
        });
        events(1, SWEEP_WAIT_S);
        op("exists /jt/cont", () -> stat(zk.exists("/jt/cont", false)));
    }

    void ttlSweep() throws Exception {
        Recorder w = new Recorder("ttlWatch");
        Stat s = new Stat();
        op("create /jt/ttl-short ttl 1", () -> zk.create("/jt/ttl-short", b("t"), OPEN,
                CreateMode.PERSISTENT_WITH_TTL, s, 1));
        op("exists /jt/ttl-short watch", () -> String.valueOf(zk.exists("/jt/ttl-short", w) != null));
        events(1, SWEEP_WAIT_S);
        op("exists /jt/ttl (long ttl)", () -> stat(zk.exists("/jt/ttl", false)));
    }

    void authFailed() throws Exception {
        ZooKeeper bad = connect(server, new Recorder("badauth", true));
        try {
            states(1);
            bad.addAuthInfo("nosuchscheme", b("x"));
            states(1);
            op("exists / after AuthFailed", () -> stat(bad.exists("/jt", false)));
        } finally {
            bad.close();
        }
    }

    void closeSession() throws Exception {
        Recorder w = new Recorder("closeWatch");
        op("other exists /jt/eph watch", () -> String.valueOf(other.exists("/jt/eph", w) != null));
        zk.close();
        states(1);
        events(1);
        op("other getChildren /jt/seq", () -> sorted(other.getChildren("/jt/seq", false)));
        op("other getChildren /jt/kids", () -> sorted(other.getChildren("/jt/kids", false)));
        op("other getEphemerals", () -> sorted(other.getEphemerals()));
        op("other getChildren /jt", () -> sorted(other.getChildren("/jt", false)));
    }

    void leftovers() throws InterruptedException {
        Thread.sleep(QUIET_MS);
        String e;
        while ((e = EVENTS.poll()) != null) {
            out("UNEXPECTED event " + e);
        }
        out("done");
    }

    void runAll() throws InterruptedException {
        step("connect", this::connectClients);
        if (zk == null || other == null) {
            return;
        }
        step("create.persistent", this::createPersistent);
        step("create.ephemeral", this::createEphemeral);
        step("create.sequential", this::createSequential);
        step("create.container", this::createContainer);
        step("create.ttl", this::createTtl);
        step("create2", this::create2);
        step("getData.watch", this::getDataWatch);
        step("setData.version", this::setDataVersions);
        step("exists.watch", this::existsWatch);
        step("getChildren.watch", this::getChildrenWatch);
        step("delete.version", this::deleteWithVersion);
        step("multi.success", this::multiSuccess);
        step("multi.failure", this::multiFailure);
        step("multiRead", this::multiRead);
        step("getEphemerals", this::ephemerals);
        step("getAllChildrenNumber", this::allChildrenNumber);
        step("addWatch.persistent", this::addWatchPersistent);
        step("addWatch.recursive", this::addWatchRecursive);
        step("addWatch.defaultWatcher", this::addWatchOnDefaultWatcher);
        step("removeWatches", this::removeWatches);
        step("removeWatches.persistent", this::removePersistentWatches);
        step("whoAmI", this::whoAmIBefore);
        step("acl", this::acl);
        step("sync", this::sync);
        step("systemTree", this::systemTree);
        step("config", this::config);
        step("setWatches.reconnect", this::setWatchesAcrossReconnect);
        step("setWatches2.reconnect", this::setWatches2AcrossReconnect);
        step("container.sweep", this::containerSweep);
        step("ttl.sweep", this::ttlSweep);
        step("authFailed", this::authFailed);
        step("close", this::closeSession);
        step("end", this::leftovers);
        other.close();
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: ZkOps HOST:PORT");
            System.exit(2);
        }
        new ZkOps(args[0]).runAll();
        System.out.flush();
        System.exit(0);
    }
}
