package coldtier.clickhouse;

import java.io.FilterInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InterruptedIOException;
import java.io.OutputStream;
import java.io.Serializable;
import java.net.ConnectException;
import java.net.HttpURLConnection;
import java.net.URI;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * One query to ClickHouse's HTTP interface: POSTed, authenticated by headers (never in the URL,
 * so no log or error shows the password), every read bounded by the socket timeout (a frozen
 * server ends in a timeout, not a hang). A non-200 answer is an IOException with the server's text.
 */
final class NativeHttp implements Serializable {
  private static final long serialVersionUID = 1L;

  final String endpoint; // scheme://host:port
  final String database;
  private final String user;
  private final String password;
  final int connectTimeoutMs;
  final int socketTimeoutMs;
  private final TreeMap<String, String> settings;

  NativeHttp(String endpoint, String database, String user, String password, int connectTimeoutMs,
      int socketTimeoutMs, Map<String, String> settings) {
    this.endpoint = endpoint.replaceAll("/+$", "");
    this.database = database;
    this.user = user;
    this.password = password;
    this.connectTimeoutMs = connectTimeoutMs;
    this.socketTimeoutMs = socketTimeoutMs;
    this.settings = new TreeMap<>(settings);
  }

  /** Server errors that mean "the same query again may succeed", as clickhouse-jdbc treats them. */
  static final Set<Integer> RETRYABLE = Set.of(159, 202, 203, 209, 210);
  static final int ATTEMPTS = 3;

  /**
   * The answer's body, open; the caller closes it (which drops the connection). A refused
   * connection or a retryable server error is tried again (at most {@link #ATTEMPTS} times in all):
   * only here, before any byte of an answer is read, so a retry can never repeat or skip rows. A
   * read that times out is not retried: the server may be frozen, and the bound must hold.
   */
  InputStream post(String sql) throws IOException {
    for (int attempt = 1; ; attempt++) {
      try {
        return postOnce(sql);
      } catch (ServerError | ConnectException e) {
        boolean again = !(e instanceof ServerError) || RETRYABLE.contains(((ServerError) e).code);
        if (!again || attempt >= ATTEMPTS) {
          throw e;
        }
        try {
          Thread.sleep(250L << attempt);
        } catch (InterruptedException ie) {
          Thread.currentThread().interrupt();
          throw new InterruptedIOException("interrupted before retrying a ClickHouse query");
        }
      }
    }
  }

  /** A non-200 answer: ClickHouse's error code (X-ClickHouse-Exception-Code) and its text. */
  static final class ServerError extends IOException {
    private static final long serialVersionUID = 1L;
    final int code;

    ServerError(int code, String message) {
      super(message);
      this.code = code;
    }
  }

  private InputStream postOnce(String sql) throws IOException {
    StringBuilder url = new StringBuilder(endpoint).append("/?database=").append(enc(database));
    for (Map.Entry<String, String> e : settings.entrySet()) {
      url.append('&').append(enc(e.getKey())).append('=').append(enc(e.getValue()));
    }
    HttpURLConnection c = (HttpURLConnection) URI.create(url.toString()).toURL().openConnection();
    c.setConnectTimeout(connectTimeoutMs);
    c.setReadTimeout(socketTimeoutMs);
    c.setRequestMethod("POST");
    c.setDoOutput(true);
    c.setUseCaches(false);
    c.setRequestProperty("X-ClickHouse-User", user);
    c.setRequestProperty("X-ClickHouse-Key", password);
    byte[] body = sql.getBytes(StandardCharsets.UTF_8);
    c.setFixedLengthStreamingMode(body.length);
    try (OutputStream out = c.getOutputStream()) {
      out.write(body);
    }
    int status = c.getResponseCode();
    if (status != 200) {
      int code;
      try {
        code = Integer.parseInt(String.valueOf(c.getHeaderField("X-ClickHouse-Exception-Code")).trim());
      } catch (NumberFormatException noCode) {
        code = -1; // a proxy's answer, not ClickHouse's
      }
      String text;
      try (InputStream err = c.getErrorStream()) {
        text = err == null ? "" : new String(err.readNBytes(4096), StandardCharsets.UTF_8).trim();
      } finally {
        c.disconnect();
      }
      throw new ServerError(code, "ClickHouse at " + endpoint + " answered HTTP " + status + ": " + text);
    }
    return new FilterInputStream(c.getInputStream()) {
      @Override
      public void close() {
        c.disconnect(); // drops the socket at once: no draining of an unread answer
      }
    };
  }

  private static String enc(String s) {
    return URLEncoder.encode(s, StandardCharsets.UTF_8);
  }
}
