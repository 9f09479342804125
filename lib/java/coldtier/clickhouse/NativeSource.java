package coldtier.clickhouse;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.connector.catalog.SupportsRead;
import org.apache.spark.sql.connector.catalog.Table;
import org.apache.spark.sql.connector.catalog.TableCapability;
import org.apache.spark.sql.connector.catalog.TableProvider;
import org.apache.spark.sql.connector.expressions.Transform;
import org.apache.spark.sql.connector.read.Batch;
import org.apache.spark.sql.connector.read.InputPartition;
import org.apache.spark.sql.connector.read.PartitionReader;
import org.apache.spark.sql.connector.read.PartitionReaderFactory;
import org.apache.spark.sql.connector.read.Scan;
import org.apache.spark.sql.connector.read.ScanBuilder;
import org.apache.spark.sql.sources.DataSourceRegister;
import org.apache.spark.sql.types.Metadata;
import org.apache.spark.sql.types.MetadataBuilder;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;
import org.apache.spark.sql.vectorized.ColumnarBatch;

/**
 * A columnar batch reader of ClickHouse: each Spark partition POSTs one query with {@code FORMAT
 * Native} and decodes the streamed blocks straight into Spark column vectors, with no JDBC
 * ResultSet, no per-value objects and no row-by-row getters.
 *
 * <p>Options: {@code endpoint} (scheme://host:port), {@code database}, {@code user}, {@code
 * password}, {@code connectTimeoutMs}, {@code socketTimeoutMs}, {@code schemaQuery} (the query
 * whose columns the scan returns, described once when the scan is planned), {@code partitions} and
 * {@code query.0 … query.N-1} (one query per partition, each returning those columns), and {@code
 * setting.NAME} for each ClickHouse setting to send with every query.
 */
public final class NativeSource implements TableProvider, DataSourceRegister {
  static final String CH_TYPE = "clickhouse_type";

  @Override
  public String shortName() {
    return "clickhouse-native";
  }

  @Override
  public boolean supportsExternalMetadata() {
    return false;
  }

  @Override
  public StructType inferSchema(CaseInsensitiveStringMap options) {
    NativeHttp http = http(options);
    String sql = "DESCRIBE TABLE (" + required(options, "schemaQuery") + ") FORMAT TabSeparated";
    StructType schema = new StructType();
    try (InputStream in = http.post(sql);
        BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
      for (String line = r.readLine(); line != null; line = r.readLine()) {
        String[] f = line.split("\t", -1);
        String name = unescapeTsv(f[0]);
        String type = unescapeTsv(f[1]);
        NativeColumn col;
        try {
          col = NativeColumn.of(NativeColumn.plain(type));
        } catch (IllegalArgumentException e) {
          throw new IllegalArgumentException("column " + name + ": " + e.getMessage(), e);
        }
        Metadata md = new MetadataBuilder().putString(CH_TYPE, type).build();
        schema = schema.add(new StructField(name, col.sparkType, true, md));
      }
    } catch (IOException e) {
      throw new UncheckedIOException("describing the columns of a ClickHouse read: " + e.getMessage(), e);
    }
    return schema;
  }

  @Override
  public Table getTable(StructType schema, Transform[] partitioning, Map<String, String> properties) {
    return new NativeTable(schema);
  }

  static String required(CaseInsensitiveStringMap o, String key) {
    String v = o.get(key);
    if (v == null) {
      throw new IllegalArgumentException("the clickhouse-native reader needs the option " + key);
    }
    return v;
  }

  static NativeHttp http(CaseInsensitiveStringMap o) {
    Map<String, String> settings = new HashMap<>();
    for (Map.Entry<String, String> e : o.entrySet()) {
      if (e.getKey().toLowerCase().startsWith("setting.")) {
        settings.put(e.getKey().substring("setting.".length()), e.getValue());
      }
    }
    return new NativeHttp(required(o, "endpoint"), o.getOrDefault("database", "default"),
        o.getOrDefault("user", "default"), o.getOrDefault("password", ""),
        Integer.parseInt(o.getOrDefault("connectTimeoutMs", "10000")),
        Integer.parseInt(o.getOrDefault("socketTimeoutMs", "300000")), settings);
  }

  static String unescapeTsv(String s) {
    if (s.indexOf('\\') < 0) {
      return s;
    }
    StringBuilder b = new StringBuilder(s.length());
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (c == '\\' && i + 1 < s.length()) {
        char n = s.charAt(++i);
        switch (n) {
          case 't': b.append('\t'); break;
          case 'n': b.append('\n'); break;
          case 'r': b.append('\r'); break;
          case '0': b.append('\0'); break;
          case 'b': b.append('\b'); break;
          case 'f': b.append('\f'); break;
          default: b.append(n);
        }
      } else {
        b.append(c);
      }
    }
    return b.toString();
  }

  /**
   * The ClickHouse types the blocks will carry (from the described schema's metadata) and the
   * schema without it. A LowCardinality column is CAST to its plain type by each query: the Native
   * format sends it as a dictionary and indexes otherwise (low_cardinality_allow_in_native_format
   * does not change what the HTTP interface sends).
   */
  static final class NativeTable implements Table, SupportsRead {
    private final StructType schema;
    private final String[] chTypes;
    private final String projection; // null: no column to CAST

    NativeTable(StructType described) {
      StructField[] fields = described.fields();
      this.chTypes = new String[fields.length];
      StructType plain = new StructType();
      StringBuilder cols = new StringBuilder();
      boolean cast = false;
      for (int i = 0; i < fields.length; i++) {
        String type = fields[i].metadata().getString(CH_TYPE);
        chTypes[i] = NativeColumn.plain(type);
        String name = "`" + fields[i].name().replace("\\", "\\\\").replace("`", "\\`") + "`";
        cols.append(i == 0 ? "" : ", ");
        if (!chTypes[i].equals(type.trim())) {
          cast = true;
          cols.append("CAST(").append(name).append(" AS ").append(chTypes[i]).append(") AS ").append(name);
        } else {
          cols.append(name);
        }
        plain = plain.add(new StructField(fields[i].name(), fields[i].dataType(), true, Metadata.empty()));
      }
      this.schema = plain;
      this.projection = cast ? cols.toString() : null;
    }

    String query(String sql) {
      return projection == null ? sql : "SELECT " + projection + " FROM (" + sql + ") AS coldtier_native";
    }

    @Override
    public String name() {
      return "clickhouse-native";
    }

    @Override
    @SuppressWarnings("deprecation")
    public StructType schema() {
      return schema;
    }

    @Override
    public Set<TableCapability> capabilities() {
      return EnumSet.of(TableCapability.BATCH_READ);
    }

    @Override
    public ScanBuilder newScanBuilder(CaseInsensitiveStringMap options) {
      NativeHttp http = http(options);
      int n = Integer.parseInt(required(options, "partitions"));
      List<String> queries = new ArrayList<>(n);
      for (int i = 0; i < n; i++) {
        queries.add(query(required(options, "query." + i)));
      }
      return () -> new NativeScan(schema, chTypes, http, queries);
    }
  }

  static final class NativeScan implements Scan, Batch {
    private final StructType schema;
    private final String[] chTypes;
    private final NativeHttp http;
    private final List<String> queries;

    NativeScan(StructType schema, String[] chTypes, NativeHttp http, List<String> queries) {
      this.schema = schema;
      this.chTypes = chTypes;
      this.http = http;
      this.queries = queries;
    }

    @Override
    public StructType readSchema() {
      return schema;
    }

    @Override
    public String description() {
      return "ClickHouseNative[" + http.endpoint + ", " + queries.size() + " partitions]";
    }

    @Override
    public Batch toBatch() {
      return this;
    }

    @Override
    public InputPartition[] planInputPartitions() {
      InputPartition[] parts = new InputPartition[queries.size()];
      for (int i = 0; i < parts.length; i++) {
        parts[i] = new Part(i, queries.get(i));
      }
      return parts;
    }

    @Override
    public PartitionReaderFactory createReaderFactory() {
      return new Factory(schema, chTypes, http);
    }
  }

  record Part(int index, String sql) implements InputPartition {}

  static final class Factory implements PartitionReaderFactory {
    private static final long serialVersionUID = 1L;
    private final StructType schema;
    private final String[] chTypes;
    private final NativeHttp http;

    Factory(StructType schema, String[] chTypes, NativeHttp http) {
      this.schema = schema;
      this.chTypes = chTypes;
      this.http = http;
    }

    @Override
    public boolean supportColumnarReads(InputPartition partition) {
      return true;
    }

    @Override
    public PartitionReader<InternalRow> createReader(InputPartition partition) {
      throw new UnsupportedOperationException("the clickhouse-native reader is columnar only");
    }

    @Override
    public PartitionReader<ColumnarBatch> createColumnarReader(InputPartition partition) {
      return new NativeReader(schema, chTypes, http, (Part) partition);
    }
  }
}
