package coldtier.clickhouse;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;

/**
 * ClickHouse's Native format as it arrives: a buffered, little-endian reader of varints, strings
 * and runs of fixed-width values, handing out slices of its own buffer (no per-value objects).
 */
final class NativeInput {
  /** A run of whole fixed-width values in {@code buf[pos, pos + count * width)}. */
  interface FixedRun {
    void put(int row, int count, byte[] buf, int pos);
  }

  private final InputStream in;
  private byte[] buf;
  private int pos;
  private int end;
  private long consumed;
  private int mark = -1; // kept buffered from here (a block's start), so tail() can quote it

  NativeInput(InputStream in, int bufferSize) {
    this.in = in;
    this.buf = new byte[bufferSize];
  }

  /** Bytes read so far (for error messages). */
  long position() {
    return consumed + pos;
  }

  /** True at a clean end of the stream (between blocks). */
  boolean atEnd() throws IOException {
    return !fill(1);
  }

  /** Keep what follows buffered (a block's header) until {@link #unmark}. */
  void mark() {
    mark = pos;
  }

  void unmark() {
    mark = -1;
  }

  /** At least {@code n} bytes buffered from {@code pos}; false at the end of the stream. */
  private boolean fill(int n) throws IOException {
    if (end - pos >= n) {
      return true;
    }
    int keep = mark >= 0 ? Math.min(mark, pos) : pos;
    int need = pos - keep + n;
    if (need > buf.length) {
      byte[] bigger = new byte[Math.max(need, buf.length * 2)];
      System.arraycopy(buf, keep, bigger, 0, end - keep);
      buf = bigger;
    } else {
      System.arraycopy(buf, keep, buf, 0, end - keep);
    }
    consumed += keep;
    end -= keep;
    pos -= keep;
    if (mark >= 0) {
      mark -= keep;
    }
    while (end - pos < n) {
      int got = in.read(buf, end, buf.length - end);
      if (got < 0) {
        return false;
      }
      end += got;
    }
    return true;
  }

  private void need(int n) throws IOException {
    if (!fill(n)) {
      throw new EOFException("the Native stream ended inside a block, at byte " + position());
    }
  }

  int readByte() throws IOException {
    need(1);
    return buf[pos++] & 0xFF;
  }

  long readVarUInt() throws IOException {
    long value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      int b = readByte();
      value |= (long) (b & 0x7F) << shift;
      if (b < 0x80) {
        return value;
      }
    }
    throw new IOException("a varint longer than 10 bytes at byte " + position());
  }

  /** A length that must fit an int and a block: guards against reading garbage as a size. */
  int readLength(String what, long limit) throws IOException {
    long n = readVarUInt();
    if (n < 0 || n > limit) {
      throw new IOException(what + " of " + n + " at byte " + position() + " is not a Native block's");
    }
    return (int) n;
  }

  String readString(int limit) throws IOException {
    int n = readLength("a name", limit);
    need(n);
    String s = new String(buf, pos, n, StandardCharsets.UTF_8);
    pos += n;
    return s;
  }

  /** {@code rows} values of {@code width} bytes, handed over in runs of whole values. */
  void readFixed(int rows, int width, FixedRun sink) throws IOException {
    int row = 0;
    while (row < rows) {
      need(width);
      int count = Math.min(rows - row, (end - pos) / width);
      sink.put(row, count, buf, pos);
      pos += count * width;
      row += count;
    }
  }

  /** One length-prefixed value, handed over as a slice of the buffer. */
  void readBytes(int row, FixedRun sink) throws IOException {
    int n = readLength("a string", Integer.MAX_VALUE - 16);
    need(n);
    sink.put(row, n, buf, pos);
    pos += n;
  }

  /**
   * Up to {@code max} bytes from the mark (else from here), as text: what the server sent where a
   * block should be (the exception it writes when a query fails after its first blocks).
   */
  String tail(int max) {
    int from = mark >= 0 ? mark : pos;
    try {
      fill(Math.min(max - (pos - from), buf.length - (pos - from)));
    } catch (IOException ignored) {
      // what is buffered is all there is to show
    }
    from = mark >= 0 ? mark : pos;
    int n = Math.min(max, end - from);
    return new String(buf, from, Math.max(0, n), StandardCharsets.UTF_8);
  }
}
