// A TLS peer built on Java's own TLS implementation (JSSE, not OpenSSL), for the interop tests
// in test_java.py. Run with the source launcher: java TlsPeer.java MODE ARGS...
//
//   client PORT CA_PEM VERSION echo     send stdin's first line, print all that comes back
//                                       until the server's close_notify
//   client PORT CA_PEM VERSION bulk N   send N bytes (i % 251), half-close (TLS 1.3
//                                       close_notify), print the server's answer until its end
//   client PORT CA_PEM VERSION detach   TLS over a plain socket that stays open: one echoed
//                                       line, close_notify, then one plaintext line and its answer
//   server P12 PASSWORD VERSION [N]     listen on 127.0.0.1, port 0; print "LISTENING port";
//                                       for N clients (default 1), one after the other: echo
//                                       its bytes, prefixed once by "echo:"
//
// VERSION is TLSv1.2 or TLSv1.3. Lines printed: what came back, then "DONE".

import java.io.*;
import java.net.*;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import javax.net.ssl.*;

public class TlsPeer {
    public static void main(String[] args) throws Exception {
        if (args[0].equals("server")) {
            server(args[1], args[2], args[3], args.length > 4 ? Integer.parseInt(args[4]) : 1);
        } else {
            client(Integer.parseInt(args[1]), args[2], args[3], args[4], args);
        }
    }

    static SSLContext context(KeyManager[] keys, TrustManager[] trust) throws Exception {
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(keys, trust, null);
        return ctx;
    }

    static void client(int port, String caPem, String version, String mode, String[] args)
            throws Exception {
        Certificate ca;
        try (InputStream in = new FileInputStream(caPem)) {
            ca = CertificateFactory.getInstance("X.509").generateCertificate(in);
        }
        KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
        trust.load(null, null);
        trust.setCertificateEntry("ca", ca);
        TrustManagerFactory tmf =
                TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLSocketFactory factory = context(null, tmf.getTrustManagers()).getSocketFactory();
        Socket plain = new Socket(InetAddress.getLoopbackAddress(), port);
        SSLSocket tls = (SSLSocket) factory.createSocket(plain, "localhost", port, false);
        tls.setEnabledProtocols(new String[] {version});
        SSLParameters params = tls.getSSLParameters();
        params.setEndpointIdentificationAlgorithm("HTTPS"); // the name must match: localhost
        params.setApplicationProtocols(new String[] {"http/1.1"});
        tls.setSSLParameters(params);
        tls.startHandshake();
        System.out.println("PROTOCOL " + tls.getSession().getProtocol());
        System.out.println("ALPN " + tls.getApplicationProtocol());
        OutputStream out = tls.getOutputStream();
        if (mode.equals("echo")) {
            String line = new BufferedReader(new InputStreamReader(System.in)).readLine();
            out.write((line + "\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
            printUntilEnd(tls.getInputStream());
            tls.close();
        } else if (mode.equals("bulk")) {
            long total = Long.parseLong(args[5]);
            byte[] block = new byte[65536];
            for (long sent = 0; sent < total; ) {
                int n = (int) Math.min(block.length, total - sent);
                for (int i = 0; i < n; i++) block[i] = (byte) ((sent + i) % 251);
                out.write(block, 0, n);
                sent += n;
            }
            out.flush();
            tls.shutdownOutput(); // TLS 1.3: close_notify, and the server may still answer
            printUntilEnd(tls.getInputStream());
            tls.close();
        } else { // detach
            out.write("over tls\n".getBytes(StandardCharsets.UTF_8));
            out.flush();
            InputStream in = tls.getInputStream();
            String echoed = readLine(in);
            System.out.println("TLS " + echoed);
            tls.close(); // close_notify; the plain socket stays open (autoClose false)
            plain.getOutputStream().write("plain after tls\n".getBytes(StandardCharsets.UTF_8));
            plain.getOutputStream().flush();
            System.out.println("PLAIN " + readLine(plain.getInputStream()));
            plain.close();
        }
        System.out.println("DONE");
    }

    static void server(String p12, String password, String version, int clients)
            throws Exception {
        KeyStore keys = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(p12)) {
            keys.load(in, password.toCharArray());
        }
        KeyManagerFactory kmf =
                KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, password.toCharArray());
        SSLServerSocket listener = (SSLServerSocket) context(kmf.getKeyManagers(), null)
                .getServerSocketFactory()
                .createServerSocket(0, 1, InetAddress.getLoopbackAddress());
        listener.setEnabledProtocols(new String[] {version});
        System.out.println("LISTENING " + listener.getLocalPort());
        for (int i = 0; i < clients; i++) {
            try (SSLSocket tls = (SSLSocket) listener.accept()) {
                InputStream in = tls.getInputStream();
                OutputStream out = tls.getOutputStream();
                out.write("echo:".getBytes(StandardCharsets.UTF_8));
                byte[] buffer = new byte[65536];
                int n;
                while ((n = in.read(buffer)) > 0) {
                    out.write(buffer, 0, n);
                    out.flush();
                }
                System.out.println("PROTOCOL " + tls.getSession().getProtocol());
            }
        }
        System.out.println("DONE");
    }

    static String readLine(InputStream in) throws IOException {
        ByteArrayOutputStream line = new ByteArrayOutputStream();
        int b;
        while ((b = in.read()) >= 0 && b != '\n') line.write(b);
        return line.toString(StandardCharsets.UTF_8);
    }

    static void printUntilEnd(InputStream in) throws IOException {
        byte[] buffer = new byte[65536];
        ByteArrayOutputStream all = new ByteArrayOutputStream();
        int n;
        while ((n = in.read(buffer)) > 0) all.write(buffer, 0, n);
        System.out.println("GOT " + all.toString(StandardCharsets.UTF_8).replace("\n", "\\n"));
    }
}
